package companion

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFind(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if p, err := Find(filepath.Base(self), "this test"); err != nil || p != self {
		t.Errorf("beside the program: %q %v", p, err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := Find("no-such-helper", "a feature"); err == nil || !strings.Contains(err.Error(), "a feature: no-such-helper is needed") {
		t.Errorf("missing: %v", err)
	}
}
