package hotspot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fixtureTarget writes a procfs tree for pid 300, which calls itself 7
// inside its pid namespace, with the given SigCgt mask and maps.
func fixtureTarget(t *testing.T, sigcgt, maps string) (root string) {
	t.Helper()
	root = t.TempDir()
	dir := filepath.Join(root, "300")
	for rel, content := range map[string]string{
		"status": "Name:\tjava\nState:\tS (sleeping)\nTgid:\t300\nPid:\t300\nPPid:\t1\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nNStgid:\t300\t7\nNSpid:\t300\t7\n" +
			"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t" + sigcgt + "\n",
		"stat":     "300 (java) S 1 300 300 0 -1 4194560 0 0 0 0 5 6 0 0 20 0 3 0 777 0 0\n",
		"maps":     maps,
		"root/tmp": "",
	} {
		p := filepath.Join(dir, rel)
		if rel == "root/tmp" {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const hotspotMaps = "7f0000000000-7f0000100000 r-xp 00000000 08:01 99 /usr/lib/jvm/java-17/lib/server/libjvm.so\n"

// TestFixtureTargetDiscovery: the protocol reads its target — namespace
// pid, start time, credentials, socket and trigger paths — from whatever
// procfs it is given.
func TestFixtureTargetDiscovery(t *testing.T) {
	root := fixtureTarget(t, "0000000000000004", hotspotMaps)
	tg, err := NewJVMAt(root, 300)
	if err != nil {
		t.Fatal(err)
	}
	if tg.NSPid != 7 || tg.StartTime != 777 || tg.UID != 1000 || tg.GID != 1000 {
		t.Errorf("target %+v", tg)
	}
	if want := filepath.Join(root, "300/root/tmp/.java_pid7"); tg.SocketPath() != want {
		t.Errorf("socket %s, want %s", tg.SocketPath(), want)
	}
	if tg.triggerName() != ".attach_pid7" {
		t.Errorf("trigger name %s", tg.triggerName())
	}
	if err := checkSignalSafe(tg); err != nil {
		t.Errorf("a HotSpot JVM catching SIGQUIT: %v", err)
	}
	// A regular file planted at the socket path is not trusted.
	os.WriteFile(tg.SocketPath(), nil, 0o600)
	if _, err := openSocket(context.Background(), tg); !errors.Is(err, ErrUntrustedSocket) {
		t.Errorf("planted file: %v", err)
	}
}

// TestJVMOfIsNewJVMAt: a JVM built from an inspection's identity is the
// one NewJVMAt reads from the same procfs, down to where its socket is.
func TestJVMOfIsNewJVMAt(t *testing.T) {
	root := fixtureTarget(t, "0000000000000004", hotspotMaps)
	read, err := NewJVMAt(root, 300)
	if err != nil {
		t.Fatal(err)
	}
	built := JVMOf(Identity{PID: 300, NSPid: 7, StartTime: 777, UID: 1000, GID: 1000, ProcRoot: root})
	if built.PID != read.PID || built.NSPid != read.NSPid || built.StartTime != read.StartTime ||
		built.UID != read.UID || built.GID != read.GID || built.TmpDir != read.TmpDir {
		t.Errorf("JVMOf built %+v, NewJVMAt read %+v", built, read)
	}
	if built.SocketPath() != read.SocketPath() || built.proc().Path() != read.proc().Path() {
		t.Errorf("JVMOf's socket %s (proc %s), NewJVMAt's %s (proc %s)", built.SocketPath(), built.proc().Path(), read.SocketPath(), read.proc().Path())
	}
}

// TestFixtureNeverSignal: no SIGQUIT for a process that does not catch it
// or is not HotSpot (OpenJ9 maps a libjvm.so redirector too).
func TestFixtureNeverSignal(t *testing.T) {
	for name, tc := range map[string]struct{ sigcgt, maps string }{
		"not caught": {"0000000000000000", hotspotMaps},
		"openj9":     {"0000000000000004", hotspotMaps + "7f0000200000-7f0000300000 r-xp 00000000 08:01 98 /opt/openj9/lib/default/libj9vm29.so\n"},
		"not a JVM":  {"0000000000000004", "7f0000000000-7f0000100000 r-xp 00000000 08:01 97 /usr/bin/sleep\n"},
	} {
		tg, err := NewJVMAt(fixtureTarget(t, tc.sigcgt, tc.maps), 300)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkSignalSafe(tg); !errors.Is(err, ErrUnsafeSignal) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
