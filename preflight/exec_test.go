package preflight

import "os/exec"

func execCommand(path string, args ...string) *exec.Cmd { return exec.Command(path, args...) }
