package proc

import (
	"bytes"
	"fmt"
	"strings"
)

// maxEnvironSize bounds /proc/<pid>/environ. The kernel allows up to a
// quarter of the stack limit for argv+envp; 16 MiB covers an unlimited
// default-sized stack many times over.
const maxEnvironSize = 16 << 20

// Environ is a process's initial environment, in order, as KEY=VALUE
// strings. It reflects what the process was started with; later setenv
// calls are not visible from outside.
type Environ []string

// Lookup returns the first definition of key, which is what glibc's getenv
// returns when a variable is defined twice.
func (e Environ) Lookup(key string) (string, bool) {
	prefix := key + "="
	for _, kv := range e {
		if strings.HasPrefix(kv, prefix) {
			return kv[len(prefix):], true
		}
	}
	return "", false
}

// Environ reads /proc/<pid>/environ. Reading another user's environ needs
// ptrace-read access; the error then wraps fs.ErrPermission.
func (p Proc) Environ() (Environ, error) {
	data, err := readCapped(p.Path("environ"), maxEnvironSize)
	if err != nil {
		return nil, err
	}
	return parseEnviron(data), nil
}

// parseEnviron splits NUL-terminated entries. A last entry without its NUL
// (the process rewrote its stack) is kept, not dropped.
func parseEnviron(data []byte) Environ {
	var env Environ
	for len(data) > 0 {
		i := bytes.IndexByte(data, 0)
		if i < 0 {
			env = append(env, string(data))
			break
		}
		if i > 0 {
			env = append(env, string(data[:i]))
		}
		data = data[i+1:]
	}
	return env
}

// Cmdline reads /proc/<pid>/cmdline as its argument vector. A kernel thread
// or zombie has an empty one.
func (p Proc) Cmdline() ([]string, error) {
	data, err := readCapped(p.Path("cmdline"), maxEnvironSize)
	if err != nil {
		return nil, err
	}
	return parseCmdline(data), nil
}

// parseCmdline splits on NUL keeping empty arguments (they are real
// arguments: `java "" Main`). A process that overwrote its argv area with a
// single space-separated string (setproctitle) yields one element.
func parseCmdline(data []byte) []string {
	if len(data) == 0 {
		return nil
	}
	data = bytes.TrimSuffix(data, []byte{0})
	parts := bytes.Split(data, []byte{0})
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = string(p)
	}
	return out
}

// String implements fmt.Stringer with values elided: environments hold
// secrets, and logs must not.
func (e Environ) String() string {
	keys := make([]string, 0, len(e))
	for _, kv := range e {
		k, _, _ := strings.Cut(kv, "=")
		keys = append(keys, k)
	}
	return fmt.Sprintf("environ%v", keys)
}
