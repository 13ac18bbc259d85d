package preflight

import (
	"context"
	"os"
	"testing"
)

// TestELFCacheIsTheOneProbedThrough: an inspection given a cache of its
// own fills that cache, a second inspection hits it, and the zero
// ELFCache is a usable cache (it wraps the internal one by value).
func TestELFCacheIsTheOneProbedThrough(t *testing.T) {
	for name, c := range map[string]*ELFCache{"NewELFCache": NewELFCache(8, 0), "zero value": new(ELFCache)} {
		t.Run(name, func(t *testing.T) {
			for range 2 {
				if _, err := Inspect(context.Background(), os.Getpid(), Options{ELFCache: c}); err != nil {
					t.Fatal(err)
				}
			}
			if n, bytes := c.Len(); n == 0 || bytes == 0 {
				t.Fatalf("Len() = %d, %d after two inspections: the cache given was not used", n, bytes)
			}
			if hits, misses := c.Stats(); hits == 0 || misses == 0 {
				t.Errorf("Stats() = %d hits, %d misses: want both after two inspections of one process", hits, misses)
			}
			c.Reset()
			if n, _ := c.Len(); n != 0 {
				t.Errorf("Len() = %d after Reset", n)
			}
		})
	}
}
