package attach

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/preflight"
)

// TestAssumedAgentIsTheGoldenOne: the rules' golden verdicts for "no
// agent given" are computed from the agent FindAgent assumes.
func TestAssumedAgentIsTheGoldenOne(t *testing.T) {
	data, err := os.ReadFile("../conflicts/testdata/agents/assumed.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden preflight.Agent
	if err := json.Unmarshal(data, &golden); err != nil {
		t.Fatal(err)
	}
	if got := assumedAgent(); !reflect.DeepEqual(*got, golden) {
		t.Errorf("assumedAgent() = %+v, golden %+v", *got, golden)
	}
}

// TestTrustedPath: a build found (not given) is named or loaded only
// when no one but root or the caller could have put it there: its file
// and every directory above it are theirs and writable by no one else
// (a sticky /tmp above is fine).
func TestTrustedPath(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	lib := filepath.Join(dir, "ok", "libasyncProfiler.so")
	os.MkdirAll(filepath.Dir(lib), 0o755)
	os.WriteFile(lib, []byte("x"), 0o644)
	if !trustedPath(lib) {
		t.Errorf("%s: root's, in root's directories: not trusted", lib)
	}
	theirs := filepath.Join(dir, "theirs", "libasyncProfiler.so")
	os.MkdirAll(filepath.Dir(theirs), 0o755)
	os.WriteFile(theirs, []byte("x"), 0o644)
	os.Chown(theirs, testenv.Nobody, testenv.Nobody)
	writable := filepath.Join(dir, "writable", "libasyncProfiler.so")
	os.MkdirAll(filepath.Dir(writable), 0o755)
	os.Chmod(filepath.Dir(writable), 0o775)
	os.WriteFile(writable, []byte("x"), 0o644)
	inTheirDir := filepath.Join(dir, "their-dir", "libasyncProfiler.so")
	os.MkdirAll(filepath.Dir(inTheirDir), 0o755)
	os.WriteFile(inTheirDir, []byte("x"), 0o644)
	os.Chown(filepath.Dir(inTheirDir), testenv.Nobody, testenv.Nobody)
	for _, p := range []string{theirs, writable, inTheirDir} {
		if trustedPath(p) {
			t.Errorf("%s: trusted", p)
		}
	}
}
