package proc

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// NamespaceID identifies a namespace the way the kernel does: the device
// and inode of its nsfs file. Two processes share a namespace exactly when
// both numbers match.
type NamespaceID struct {
	Dev   uint64 `json:"dev"`
	Inode uint64 `json:"inode"`
}

// IsZero reports whether the ID was never read.
func (n NamespaceID) IsZero() bool { return n.Dev == 0 && n.Inode == 0 }

func (n NamespaceID) String() string { return fmt.Sprintf("%d:%d", n.Dev, n.Inode) }

// Namespace stats /proc/<pid>/ns/<kind> (kind is "mnt", "pid", "user",
// "net", "ipc", ...).
func (p Proc) Namespace(kind string) (NamespaceID, error) {
	var st unix.Stat_t
	if err := unix.Stat(p.Path("ns", kind), &st); err != nil {
		return NamespaceID{}, fmt.Errorf("stat %s: %w", p.Path("ns", kind), err)
	}
	return NamespaceID{Dev: st.Dev, Inode: st.Ino}, nil
}
