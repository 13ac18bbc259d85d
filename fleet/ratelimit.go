package fleet

import (
	"sync"
	"time"
)

// keyedLimits is a token bucket per key (a user, a namespace, a source
// address), so that one key's flood is its own: it neither slows the
// others nor spends what they share (the API server's reviews, the
// Events client's rate). Keys idle for keyIdle are forgotten; past
// maxKeys, a new key is refused until some are (memory stays bounded
// whoever mints keys).
type keyedLimits struct {
	every time.Duration
	burst int

	mu   sync.Mutex
	keys map[string]*bucket
}

// bucket holds up to burst tokens and gains one each every; a token
// taken can be given back (a review that turned out to succeed).
type bucket struct {
	tokens float64
	at     time.Time // when tokens was counted
	used   time.Time
}

const (
	keyIdle = 10 * time.Minute
	maxKeys = 16384
)

func newKeyedLimits(every time.Duration, burst int) *keyedLimits {
	return &keyedLimits{every: every, burst: burst, keys: map[string]*bucket{}}
}

// allow takes one token of key's bucket.
func (l *keyedLimits) allow(key string) bool {
	_, ok := l.reserve(key)
	return ok
}

// reserve takes one token of key's bucket, for something that may turn
// out not to count: giveBack returns it. ok is false, and nothing is
// taken, when the bucket is empty.
func (l *keyedLimits) reserve(key string) (giveBack func(), ok bool) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(key, now)
	if b == nil || b.tokens < 1 {
		return nil, false
	}
	b.tokens--
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.keys[key] == b {
				l.refill(b, time.Now())
				b.tokens = min(b.tokens+1, float64(l.burst))
			}
		})
	}, true
}

// bucketLocked is key's bucket, refilled to now, made if new (nil past
// maxKeys); l.mu held.
func (l *keyedLimits) bucketLocked(key string, now time.Time) *bucket {
	b, ok := l.keys[key]
	if !ok {
		if len(l.keys) >= maxKeys {
			for name, x := range l.keys {
				if now.Sub(x.used) > keyIdle {
					delete(l.keys, name)
				}
			}
			if len(l.keys) >= maxKeys {
				return nil
			}
		}
		b = &bucket{tokens: float64(l.burst), at: now}
		l.keys[key] = b
	}
	l.refill(b, now)
	b.used = now
	return b
}

func (l *keyedLimits) refill(b *bucket, now time.Time) {
	if now.After(b.at) {
		b.tokens = min(float64(l.burst), b.tokens+float64(now.Sub(b.at))/float64(l.every))
		b.at = now
	}
}
