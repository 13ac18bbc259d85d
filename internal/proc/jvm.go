package proc

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// The one place that decides, from a mapped file's name, whether a
// process is a Java VM and which kind: preflight's inspection and scan and
// the attach protocol's last check before SIGQUIT all ask here.
const (
	JVMHotSpot = "hotspot"
	JVMOpenJ9  = "openj9"
)

// JVMLibraryKind names the VM a mapped library belongs to: "hotspot" for
// libjvm.so, "openj9" for libj9vm*.so (OpenJ9 also maps a libjvm.so
// redirector, so libj9vm decides), "" for anything else.
func JVMLibraryKind(path string) string {
	base := filepath.Base(path)
	switch {
	case strings.HasPrefix(base, "libj9vm"):
		return JVMOpenJ9
	case base == "libjvm.so":
		return JVMHotSpot
	}
	return ""
}

// mightBeJVMLibrary is the allocation-free prefilter of JVMLibraryKind for
// streamed maps lines.
func mightBeJVMLibrary(path []byte) bool {
	return bytes.HasSuffix(path, []byte("/libjvm.so")) || bytes.Contains(path, []byte("/libj9vm"))
}

// JVMKind reads the process's maps and returns "hotspot", "openj9" or ""
// (not a JVM), with the library that says so.
func (p Proc) JVMKind() (kind, library string, err error) {
	err = p.WalkMaps(mightBeJVMLibrary, func(m *Mapping) error {
		switch JVMLibraryKind(m.Path) {
		case JVMOpenJ9:
			kind, library = JVMOpenJ9, m.Path
			return ErrStop
		case JVMHotSpot:
			kind, library = JVMHotSpot, m.Path
		}
		return nil
	})
	return kind, library, err
}

// ErrUntrustedSocket: the file at the attach socket's path is not one the
// JVM would have created.
var ErrUntrustedSocket = errors.New("untrusted attach socket")

// CheckAttachSocket is the one trust check of an attach socket, used by
// the rules (on a report) and by the protocol (right before connecting):
// a socket, owned by the JVM's euid or root, with no group or other
// permission bits — how every JDK creates it (docs/attach-protocol.md).
func CheckAttachSocket(isSocket bool, owner, mode, jvmUID uint32) error {
	switch {
	case !isSocket:
		return fmt.Errorf("%w: not a socket (mode %o)", ErrUntrustedSocket, mode)
	case owner != jvmUID && owner != 0:
		return fmt.Errorf("%w: owned by uid %d, the JVM runs as uid %d", ErrUntrustedSocket, owner, jvmUID)
	case mode&0o077 != 0:
		return fmt.Errorf("%w: mode %04o; the JVM creates it 0600", ErrUntrustedSocket, mode&0o7777)
	}
	return nil
}

// launcherArgOpt reports whether the launcher option a takes the next
// argument as its value. A switch, not a map: a map literal is built at
// the start of every command.
func launcherArgOpt(a string) bool {
	switch a {
	case "-cp", "-classpath", "--class-path", "--module-path", "-p",
		"--add-modules", "--add-opens", "--add-exports", "--add-reads",
		"--upgrade-module-path", "--limit-modules", "--patch-module",
		"--enable-native-access":
		return true
	}
	return false
}

// JavaMain splits a java command line into the options before the main
// class and the main class itself ("-jar app.jar" and "-m mod/Main" as
// such): what jps shows as the application's name.
func JavaMain(args []string) (opts []string, main string) {
	if len(args) == 0 {
		return nil, ""
	}
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-jar" || a == "-m" || a == "--module":
			if i+1 < len(args) {
				return opts, a + " " + args[i+1]
			}
			return opts, a
		case launcherArgOpt(a):
			i++
		case strings.HasPrefix(a, "-") || strings.HasPrefix(a, "@"):
			opts = append(opts, a)
		default:
			return opts, a
		}
	}
	return opts, ""
}
