package preflight

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

// muslRoot makes a fixture root that looks like an Alpine container: the
// musl loader mapped, no glibc. With gcompat, a libc.so.6 that defines
// only the oldest glibc version is installed too.
func muslRoot(t *testing.T, gcompat bool) *Report {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"lib", "usr/lib", "etc"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "lib/ld-musl-x86_64.so.1"), []byte("\x7fELF"), 0o755)
	if gcompat {
		stub := testenv.BuildC(t, "libc.so.6", "int gcompat_stub(void) { return 0; }\n", "-shared", "-fPIC", "-nostdlib",
			"-Wl,-soname,libc.so.6", "-Wl,--version-script="+versionScript(t, "GLIBC_2.2.5 { global: gcompat_stub; local: *; };\n"))
		data, err := os.ReadFile(stub)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, "lib/libc.so.6"), data, 0o755)
	}
	r := &Report{PID: 1}
	r.Process.Root = root
	r.MappedFiles = []string{"/lib/ld-musl-x86_64.so.1"}
	return r
}

func versionScript(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "v.map")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadabilityOnMusl: a glibc agent in a musl target cannot be loaded
// (no libc.so.6); with gcompat's libc.so.6 it still lacks the newer glibc
// symbol versions it needs.
func TestLoadabilityOnMusl(t *testing.T) {
	agent, err := InspectAgent(context.Background(), testenv.BuildAgent(t, testenv.AgentFixedLookalike))
	if err != nil {
		t.Fatal(err)
	}
	r := muslRoot(t, false)
	CheckLoadable(context.Background(), r, agent)
	if l := agent.Loadability; l == nil || l.Loadable != No || !strings.Contains(l.Summary(), "not found: libc.so.6") {
		t.Fatalf("musl without gcompat: %+v", agent.Loadability)
	}
	needsNewer := false
	for _, v := range agent.VersionNeeds["libc.so.6"] {
		needsNewer = needsNewer || v != "GLIBC_2.2.5"
	}
	r = muslRoot(t, true)
	CheckLoadable(context.Background(), r, agent)
	l := agent.Loadability
	if needsNewer && (l.Loadable != No || len(l.MissingVersions) == 0 || l.Resolved["libc.so.6"] != "/lib/libc.so.6") {
		t.Fatalf("musl with gcompat: %+v", l)
	}
	if !needsNewer && l.Loadable != Yes {
		t.Fatalf("the agent needs only GLIBC_2.2.5, which gcompat's stub defines: %+v", l)
	}
}
