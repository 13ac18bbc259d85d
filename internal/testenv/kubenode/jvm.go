package kubenode

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

// JVMImage is an image with jdk at its own path, what it loads, a shell,
// the test target program in /app, and the heap profilers and unwinder the
// tests preload (jemalloc, tcmalloc, libunwind) where the machine has them.
// Its entrypoint is java; a pod gives the arguments.
func (n *Node) JVMImage(t testing.TB, jdk testenv.JDK) string {
	t.Helper()
	files := Files{"/tmp": "", "/proc": "", "/sys": "", "/dev": "", "/etc": "", "/app": testenv.TargetClasspath(t, jdk)}
	entries, err := os.ReadDir(jdk.Home)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case "jmods", "docs", "man", "demo", "include":
			continue // 75 MB the target never reads
		}
		files[filepath.Join(jdk.Home, e.Name())] = filepath.Join(jdk.Home, e.Name())
	}
	bins := []string{filepath.Join(jdk.Home, "bin", "java"), filepath.Join(jdk.Home, "lib", "server", "libjvm.so"), "/bin/sh"}
	sos, _ := filepath.Glob(filepath.Join(jdk.Home, "lib", "*.so"))
	bins = append(bins, sos...)
	for _, soname := range []string{"libjemalloc.so.2", "libtcmalloc.so.4", "libunwind.so.8"} {
		for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"} {
			if p := filepath.Join(dir, soname); exists(p) {
				files[p] = p
				bins = append(bins, p)
				break
			}
		}
	}
	for _, lib := range ldd(t, bins...) {
		files[lib] = lib
	}
	files["/bin/sh"] = "/bin/sh"
	files["/bin/sleep"] = "/bin/sleep"
	files["/bin/cat"] = "/bin/cat"
	return n.Image(t, "jvm"+jdk.String()[3:], []string{filepath.Join(jdk.Home, "bin", "java")}, files)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
