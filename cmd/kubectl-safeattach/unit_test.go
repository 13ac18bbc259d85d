package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
	"golang.org/x/sys/unix"
)

// cutReader gives some bytes, then fails as a stream cut off does.
type cutReader struct{ sent bool }

func (c *cutReader) Read(p []byte) (int, error) {
	if c.sent {
		return 0, io.ErrUnexpectedEOF
	}
	c.sent = true
	return copy(p, "java/lang/Thread.run;Worker.spin 12\n"), nil
}

// TestWriteAtomically: a profile cut off leaves -f's file as it was and
// no temporary file beside it; a whole one replaces it.
func TestWriteAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "profile.collapsed")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomically(path, &cutReader{}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a cut-off profile: %v, want the cut", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "old\n" {
		t.Errorf("a cut-off profile changed the file to %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("a cut-off profile left %v", entries)
	}
	if err := writeAtomically(path, strings.NewReader("new\n")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "new\n" {
		t.Errorf("a whole profile wrote %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("a whole profile left %v", entries)
	}
}

// TestUnsupportedCredentials: a basic-auth user, a client certificate
// that is not one, and impersonation are refused before anything is
// sent, saying why.
func TestUnsupportedCredentials(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: cert
  user: {client-certificate-data: Y2VydA==, client-key-data: a2V5}
- name: token
  user: {token: abc}
- name: basic
  user: {username: u, password: p}
contexts:
- name: basic
  context: {cluster: c, user: basic}
- name: cert
  context: {cluster: c, user: cert}
- name: token
  context: {cluster: c, user: token}
current-context: cert
`), 0o600); err != nil {
		t.Fatal(err)
	}
	direct := []string{"profile", "orders", "--direct", "https://127.0.0.1:1"}
	r := kubectl(t, kubeconfig, direct...)
	if r.code != 1 || !strings.Contains(r.stderr, "client certificate") {
		t.Errorf("a malformed client certificate: exit %d, want 1 naming it\nstderr: %s", r.code, r.stderr)
	}
	r = kubectl(t, kubeconfig, append(direct, "--context", "basic")...)
	if r.code != 1 || !strings.Contains(r.stderr, "basic auth is not supported") {
		t.Errorf("a basic-auth user: exit %d, want 1 saying basic auth is not supported\nstderr: %s", r.code, r.stderr)
	}
	r = kubectl(t, kubeconfig, append(direct, "--context", "token", "--as", "admin")...)
	if r.code != 1 || !strings.Contains(r.stderr, "impersonation") {
		t.Errorf("--as: exit %d, want 1 naming impersonation\nstderr: %s", r.code, r.stderr)
	}
	r = kubectl(t, kubeconfig, append(direct, "--direct", "http://127.0.0.1:1", "--context", "token")...)
	if r.code != 1 || !strings.Contains(r.stderr, "https://") {
		t.Errorf("--direct http: exit %d, want 1 asking for https\nstderr: %s", r.code, r.stderr)
	}
}

// TestRefusedBeforeAsking: options the agent would refuse are refused
// before the kubeconfig is even read (no API server named here).
func TestRefusedBeforeAsking(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"profile", "orders", "-d", "0s"}, "want a positive duration"},
		{[]string{"profile", "orders", "-o", "svg"}, "want collapsed, pprof, jfr or flamegraph"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append(c.args, "--kubeconfig", "/nonexistent"), &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, want 1 with %q\n%s", c.args, code, c.want, stderr.String())
		}
	}
}

// openPTY opens a pseudo-terminal's two ends: what the plugin writes to
// the second, a terminal, is read from the first.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		testenv.Missing(t, "a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestBinaryProfileNotToATerminal: -o pprof or jfr to a terminal is
// refused before anything is asked (the bytes would be the terminal's
// input); the same to a pipe is not refused for that.
func TestBinaryProfileNotToATerminal(t *testing.T) {
	_, tty := openPTY(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig") // never read: refused first
	for _, format := range []string{"pprof", "jfr"} {
		var stderr bytes.Buffer
		if code := run(context.Background(), []string{"profile", "orders", "-o", format, "--kubeconfig", kubeconfig}, tty, &stderr); code != 1 ||
			!strings.Contains(stderr.String(), "-o "+format+" is binary: give -f FILE") {
			t.Errorf("-o %s to a terminal: exit %d\n%s", format, code, stderr.String())
		}
		var stdout bytes.Buffer
		stderr.Reset()
		if run(context.Background(), []string{"profile", "orders", "-o", format, "--kubeconfig", kubeconfig}, &stdout, &stderr); strings.Contains(stderr.String(), "is binary") {
			t.Errorf("-o %s to a pipe refused as to a terminal: %s", format, stderr.String())
		}
	}
}
