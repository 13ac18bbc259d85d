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
// It is bounded in entries and in (estimated) bytes; past either bound
// the oldest entries go first. The zero value holds DefaultCacheEntries
// entries and DefaultCacheBytes bytes.
type Cache struct {
	mu         sync.Mutex
	entries    map[cacheKey]*cacheEntry
	order      []cacheKey // insertion order, oldest first
	bytes      int64
	maxEntries int
	maxBytes   int64
	hits       uint64
	misses     uint64
}

type cacheEntry struct {
	info *Info
	size int64
}

// Default bounds: a probe keeps symbol names, about 30 KiB for a typical
// library and a few MiB for libjvm.so; a host with 200 JVMs of a handful
// of builds needs a few dozen entries.
const (
	DefaultCacheEntries = 1024
	DefaultCacheBytes   = 64 << 20
)

// NewCache returns a cache bounded to maxEntries probes and maxBytes of
// estimated memory (zero: the default bound).
func NewCache(maxEntries int, maxBytes int64) *Cache {
	c := new(Cache)
	c.SetLimits(maxEntries, maxBytes)
	return c
}

// SetLimits bounds a Cache that is not in use yet (zero: the default
// bound). It is for a Cache held by value in a public wrapper, which
// cannot be built by NewCache without copying a mutex.
func (c *Cache) SetLimits(maxEntries int, maxBytes int64) {
	c.maxEntries, c.maxBytes = maxEntries, maxBytes
}

// Unwrap returns the Cache behind a public package's wrapper type
// (preflight.ELFCache): a public package may not show an internal type
// in its API, yet diagnose must probe through the cache a caller gave
// it. The package that owns the wrapper sets Unwrap in an init function;
// it returns Shared() for a nil wrapper.
var Unwrap func(wrapper any) *Cache

var shared = NewCache(0, 0)

// Shared is the process-wide cache that inspection and hang reports use
// unless they are given their own.
func Shared() *Cache { return shared }

func (c *Cache) limits() (int, int64) {
	e, b := c.maxEntries, c.maxBytes
	if e <= 0 {
		e = DefaultCacheEntries
	}
	if b <= 0 {
		b = DefaultCacheBytes
	}
	return e, b
}

// sizeOf estimates the memory an Info holds.
func sizeOf(i *Info) int64 {
	n := int64(256)
	for _, s := range i.Defined {
		n += int64(len(s.Name)) + 40
	}
	for _, s := range i.Imported {
		n += int64(len(s)) + 16
	}
	for _, s := range append(append(append([]string{}, i.Needed...), i.VersionLiterals...), i.Truncated...) {
		n += int64(len(s)) + 16
	}
	for k, v := range i.Needles {
		n += int64(len(k)+len(v)) + 32
	}
	return n
}

type cacheKey struct {
	file    FileKey
	needles string
}

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
		var info *Info
		if e := c.entries[key]; e != nil {
			info = e.info
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
		c.add(key, info)
	}
	return info, fk, nil
}

// add stores info and evicts the oldest entries past the bounds.
func (c *Cache) add(key cacheKey, info *Info) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.misses++
	if c.entries == nil {
		c.entries = map[cacheKey]*cacheEntry{}
	}
	if _, dup := c.entries[key]; dup {
		return
	}
	size := sizeOf(info)
	maxEntries, maxBytes := c.limits()
	if size > maxBytes {
		return // larger than the whole cache: not kept
	}
	c.entries[key] = &cacheEntry{info: info, size: size}
	c.order = append(c.order, key)
	c.bytes += size
	for len(c.entries) > maxEntries || c.bytes > maxBytes {
		old := c.order[0]
		c.order = c.order[1:]
		if e := c.entries[old]; e != nil {
			c.bytes -= e.size
			delete(c.entries, old)
		}
	}
}

// Len returns the number of entries and their estimated bytes.
func (c *Cache) Len() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.bytes
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
	c.order, c.bytes = nil, 0
	c.mu.Unlock()
}
