package fleet

import (
	"fmt"
	"testing"
	"time"
)

// TestKeyedLimits: a key's burst is its own — spent, that key is
// refused while another is not — and the keys held stay bounded.
func TestKeyedLimits(t *testing.T) {
	l := newKeyedLimits(time.Hour, 3)
	for i := range 3 {
		if !l.allow("alice") {
			t.Fatalf("alice refused at %d of a burst of 3", i)
		}
	}
	if l.allow("alice") {
		t.Error("alice allowed past her burst")
	}
	if !l.allow("bob") {
		t.Error("bob refused for alice's flood")
	}
	for i := range maxKeys {
		l.allow(fmt.Sprint("minted-", i))
	}
	if n := len(l.keys); n > maxKeys {
		t.Errorf("%d keys held, want at most %d", n, maxKeys)
	}
	if l.allow("one-more") {
		t.Error("a new key allowed past maxKeys with none idle")
	}
}
