package attach

import (
	"context"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/safefile"
)

// Stores opens the caller's stores in the target's delivery directories
// (at most one per directory; each a real directory of the caller's
// user, mode 0700 — what deliveries are made from): the profiling layer
// keeps its owner records there. With create, one is made in the first
// directory that can take it when none exists. The caller closes them.
func (d *Door) Stores(ctx context.Context, create bool) ([]*os.File, error) {
	root := d.c.report.Process.Root
	var out []*os.File
	var why []string
	for _, dir := range deliveryDirs {
		base, err := safefile.OpenDirIn(ctx, root, dir)
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", dir, err))
			continue
		}
		fd, _, err := openStore(ctx, root, base, false)
		if err == nil {
			out = append(out, os.NewFile(uintptr(fd), dir))
		}
		base.Close()
	}
	if len(out) > 0 || !create {
		return out, nil
	}
	for _, dir := range deliveryDirs {
		base, err := safefile.OpenDirIn(ctx, root, dir)
		if err != nil {
			continue
		}
		var fs unix.Statfs_t
		if unix.Fstatfs(base.FD(), &fs) == nil && fs.Flags&unix.ST_RDONLY != 0 {
			base.Close()
			why = append(why, dir+": mounted read-only")
			continue
		}
		fd, _, err := openStore(ctx, root, base, true)
		base.Close()
		if err == nil {
			return []*os.File{os.NewFile(uintptr(fd), dir)}, nil
		}
		why = append(why, fmt.Sprintf("%s: %v", dir, err))
	}
	return nil, fmt.Errorf("no directory in the target can keep the profiler's owner record: %s", strings.Join(why, "; "))
}

// ForeignStores opens the stores in the target's delivery directories
// that another user owns (root's, for a caller who is not root): real
// directories, not followed if links, at most maxStoreCandidates looked
// at per directory. They are for reading what another user left (a
// profiler's owner record), never for writing. The caller closes them.
func (d *Door) ForeignStores(ctx context.Context) []*os.File {
	root := d.c.report.Process.Root
	me := uint32(os.Geteuid())
	var out []*os.File
	for _, dir := range deliveryDirs {
		base, err := safefile.OpenDirIn(ctx, root, dir)
		if err != nil {
			continue
		}
		names, _ := safefile.ListIn(ctx, root, dir, maxTmpListing)
		seen := 0
		for _, n := range names {
			if n != storeDir && !strings.HasPrefix(n, storeDir+"-") || seen == maxStoreCandidates {
				continue
			}
			seen++
			sfd, err := unix.Openat(base.FD(), n, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				continue
			}
			var st unix.Stat_t
			if unix.Fstat(sfd, &st) != nil || st.Uid == me {
				unix.Close(sfd)
				continue
			}
			out = append(out, os.NewFile(uintptr(sfd), dir+"/"+n))
		}
		base.Close()
	}
	return out
}
