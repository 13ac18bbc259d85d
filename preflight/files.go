package preflight

import "golang.org/x/sys/unix"

// sameFile reports whether path (seen from here) is the mapped file.
func sameFile(path string, l *mappedLib) bool {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false
	}
	return st.Ino == l.inode && unix.Major(st.Dev) == l.devMajor && unix.Minor(st.Dev) == l.devMinor
}
