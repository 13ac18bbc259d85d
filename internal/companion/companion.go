package companion

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Find returns the path of the helper program name: beside the running
// program (where make build puts it), else on PATH. what names the
// feature that needs it, for the error.
func Find(name, what string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s: %s is needed, beside this program or on PATH (go install github.com/safeattach/safeattach/cmd/%s@latest, or make build)", what, name, name)
	}
	return p, nil
}
