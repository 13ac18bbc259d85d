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

// TestLiveAltTempDirStaysInTheTarget (the way back): a pod's
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

// TestLivePlantedStoreDoesNotDenyDelivery (the way back): the pod's
// user pre-creates .safeattach in /var/tmp and /dev/shm (its /tmp is
// noexec, so those are where the agent can go). Each planted name is
// passed over, never used or removed: the agent goes to a store under a
// name no one could predict, found again by the next delivery of the
// same bytes.
func TestLivePlantedStoreDoesNotDenyDelivery(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentRecordOptions)
	pod := testenv.StartPod(t, testenv.PodSpec{Setup: `mount -o remount,noexec "$R/tmp"`})
	pod.Exec(t, pod.UID, "for d in /tmp /var/tmp /dev/shm; do mkdir -m 0777 $d/.safeattach && touch $d/.safeattach/mine; done")
	var first string
	for i := 0; i < 3; i++ {
		res, err := Load(context.Background(), pod.PID, lib, "", Options{})
		if err != nil {
			t.Fatalf("load %d with planted stores: %v", i+1, err)
		}
		if !strings.HasPrefix(res.LoadedFrom, "/var/tmp/.safeattach-") {
			t.Fatalf("load %d: loaded from %q, want a store of our own in /var/tmp", i+1, res.LoadedFrom)
		}
		if first == "" {
			first = res.LoadedFrom
		} else if res.LoadedFrom != first {
			t.Errorf("load %d: %s, the first load used %s: a second copy", i+1, res.LoadedFrom, first)
		}
	}
	// The planted directories are the pod user's and untouched.
	out := pod.Exec(t, pod.UID, "ls -ld /var/tmp/.safeattach /var/tmp/.safeattach/mine && stat -c %U /var/tmp/.safeattach")
	if !strings.Contains(out, "nobody") {
		t.Errorf("planted store changed: %s", out)
	}
	// Our store is root's and not writable by the pod's user.
	st, err := os.Stat(fmt.Sprintf("/proc/%d/root%s", pod.PID, filepath.Dir(filepath.Dir(first))))
	if err != nil || st.Mode().Perm()&0o022 != 0 {
		t.Errorf("our store: %v %v", st, err)
	}
}
