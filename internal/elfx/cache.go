package elfx

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
)

// FileKey identifies one version of one file: the same (dev, inode) with a
// different size or mtime is a replaced file and is probed again.
type FileKey struct {
	Dev, Inode uint64
	Size       int64
	MtimeNsec  int64
}

func keyOf(fi os.FileInfo) (FileKey, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return FileKey{}, false
	}
	return FileKey{Dev: st.Dev, Inode: st.Ino, Size: fi.Size(), MtimeNsec: fi.ModTime().UnixNano()}, true
}

// Cache memoises probes by file identity. It is safe for concurrent use.
// The zero value is ready to use and unbounded up to maxCacheEntries.
type Cache struct {
	mu      sync.Mutex
	entries map[cacheKey]*Info
	hits    uint64
	misses  uint64
}

type cacheKey struct {
	file    FileKey
	needles string
}

// maxCacheEntries bounds memory: a probe keeps symbol names, so a few
// thousand distinct libraries is a few tens of MiB at most.
const maxCacheEntries = 4096

// Probe probes the open file f, using the cache when an identical file was
// probed before with the same needles. The returned Info is shared and
// must not be modified.
func (c *Cache) Probe(f *os.File, opts ProbeOptions) (*Info, FileKey, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, FileKey{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, FileKey{}, fmt.Errorf("%s: not a regular file", f.Name())
	}
	fk, ok := keyOf(fi)
	key := cacheKey{fk, strings.Join(opts.Needles, "\x00")}
	if ok {
		c.mu.Lock()
		info := c.entries[key]
		if info != nil {
			c.hits++
		}
		c.mu.Unlock()
		if info != nil {
			return info, fk, nil
		}
	}
	info, err := ProbeReader(f, fi.Size(), opts)
	if err != nil {
		return nil, fk, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if ok {
		c.mu.Lock()
		c.misses++
		if c.entries == nil {
			c.entries = map[cacheKey]*Info{}
		}
		if len(c.entries) >= maxCacheEntries {
			// Files are replaced rarely; dropping everything on overflow keeps
			// this simple and still bounded.
			clear(c.entries)
		}
		c.entries[key] = info
		c.mu.Unlock()
	}
	return info, fk, nil
}

// Stats returns the number of cache hits and misses so far.
func (c *Cache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

// Reset empties the cache.
func (c *Cache) Reset() {
	c.mu.Lock()
	clear(c.entries)
	c.mu.Unlock()
}
