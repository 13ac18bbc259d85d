package elfx

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/testenv"
)

// TestOpenMappedNeverOpensWhatIsNotTheMapping: the path a target maps can
// be made, after mapping, a FIFO or a device (or a link to one on the
// host): it is looked at without being opened — a FIFO's open used to
// block past every deadline, a device's to act.
func TestOpenMappedNeverOpensWhatIsNotTheMapping(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	opened := testenv.WatchOpens(t, fifo)
	var st unix.Stat_t
	unix.Stat(fifo, &st)
	// Even the right inode is refused when it is not a regular file.
	m := MappedFile{ProcDir: dir, Path: fifo, Inode: st.Ino, DevMajor: unix.Major(st.Dev), DevMinor: unix.Minor(st.Dev)}
	os.Symlink("/", filepath.Join(dir, "root")) // <ProcDir>/root/<path> is the FIFO
	if f, _, err := OpenMapped(m); err == nil || !errors.Is(err, ErrReplaced) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("a FIFO at the mapping's path: %v", err)
	}
	if opened() {
		t.Error("the FIFO was opened")
	}
}
