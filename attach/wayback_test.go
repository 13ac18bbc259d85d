package attach

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

// baitSocket listens on dir/.java_pid<nspid> on the host, owned by uid
// with mode 0600 (what a JVM's socket looks like), and reports whether
// anyone connected.
func baitSocket(t *testing.T, dir string, nspid int, uid uint32) (connected func() bool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, fmt.Sprintf(".java_pid%d", nspid))
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	os.Chown(path, int(uid), int(uid))
	os.Chmod(path, 0o600)
	hit := make(chan struct{}, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case hit <- struct{}{}:
			default:
			}
		}
	}()
	return func() bool {
		select {
		case <-hit:
			return true
		case <-time.After(100 * time.Millisecond):
			return false
		}
	}
}

// TestLiveAltTempDirStaysInTheTarget (issue 17, case 8): a pod's
// JAVA_TOOL_OPTIONS names an -XX:AltTempDir that leads out of the pod —
// with "..", or through a symlink the pod's user made in its /tmp — to a
// directory on the host holding a socket that looks like the JVM's.
// Nothing may connect to it: the directory is resolved inside the pod's
// root, where it does not exist.
func TestLiveAltTempDirStaysInTheTarget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, alt, setup string }{
		{"dotdot", "../../../../../../var/tmp/safeattach-bait-%d-dotdot", ""},
		{"symlink", "/tmp/evil", "ln -s /var/tmp/safeattach-bait-%d-symlink /tmp/evil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			host := fmt.Sprintf("/var/tmp/safeattach-bait-%d-%s", os.Getpid(), tc.name)
			alt, setup := tc.alt, tc.setup
			if strings.Contains(alt, "%d") {
				alt = fmt.Sprintf(alt, os.Getpid())
			}
			if setup != "" {
				setup = fmt.Sprintf(setup, os.Getpid())
			}
			// JDKs before the flag ignore it (IgnoreUnrecognizedVMOptions)
			// and keep /tmp: safeattach believes the flag, as it must.
			pod := testenv.StartPod(t, testenv.PodSpec{Env: []string{"JAVA_TOOL_OPTIONS=-XX:+IgnoreUnrecognizedVMOptions -XX:AltTempDir=" + alt}})
			if setup != "" {
				pod.Exec(t, pod.UID, setup)
			}
			connected := baitSocket(t, host, 1, pod.UID)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := Jcmd(ctx, pod.PID, "VM.version", Options{})
			if connected() {
				t.Fatalf("connected to the host's bait socket through AltTempDir %q (err %v)", alt, err)
			}
			if err == nil {
				t.Fatal("jcmd succeeded through a socket that does not exist in the pod")
			}
			if strings.Contains(err.Error(), "served by pid") {
				t.Fatalf("the bait was reached (the peer check caught it): %v", err)
			}
			t.Logf("refused as it should be: %v", err)
		})
	}
}
