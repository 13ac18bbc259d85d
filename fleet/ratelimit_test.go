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

// TestKeyedLimitsGiveBack: a token given back is there again; an empty
// bucket refills at its rate.
func TestKeyedLimitsGiveBack(t *testing.T) {
	l := newKeyedLimits(time.Hour, 2)
	back, ok := l.reserve("src")
	if !ok || !l.allow("src") {
		t.Fatal("a full bucket of 2 refused")
	}
	if l.allow("src") {
		t.Fatal("an empty bucket allowed")
	}
	back()
	back() // once only
	if !l.allow("src") || l.allow("src") {
		t.Error("the token given back is not there once")
	}
	// An hour later (the bucket's clock set back, not the test's).
	l.keys["src"].at = l.keys["src"].at.Add(-time.Hour)
	if !l.allow("src") || l.allow("src") {
		t.Error("an hour refilled other than one token")
	}
}
