package testenv

import (
	"testing"

	"golang.org/x/sys/unix"
)

// WatchOpens watches paths for being opened (inotify IN_OPEN, which an
// O_PATH open does not raise) and returns a function that reports
// whether any was opened since it last asked: how a test proves that a
// device or FIFO a target planted was looked at, never opened.
func WatchOpens(t testing.TB, paths ...string) (opened func() bool) {
	t.Helper()
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(in) })
	for _, p := range paths {
		if _, err := unix.InotifyAddWatch(in, p, unix.IN_OPEN); err != nil {
			t.Fatal(err)
		}
	}
	return func() bool {
		n, _ := unix.Read(in, make([]byte, 4096))
		return n > 0
	}
}
