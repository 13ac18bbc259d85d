package preflight

import (
	"context"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/safefile"
)

// sameFile reports whether p (a path inside the target's root) is the
// mapped file.
func (in *inspection) sameFile(ctx context.Context, p string, l *mappedLib) bool {
	st, err := safefile.StatIn(ctx, in.r.Process.Root, p)
	if err != nil {
		return false
	}
	return st.Ino == l.inode && unix.Major(st.Dev) == l.devMajor && unix.Minor(st.Dev) == l.devMinor
}
