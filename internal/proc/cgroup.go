package proc

// maxCgroupSize bounds /proc/<pid>/cgroup: a v1 system lists one line per
// hierarchy (~15), v2 a single line.
const maxCgroupSize = 64 << 10

// Cgroup returns /proc/<pid>/cgroup, at most maxCgroupSize bytes.
func (p Proc) Cgroup() ([]byte, error) {
	return readCapped(p.Path("cgroup"), maxCgroupSize)
}
