package fleet

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimits is a token bucket per key (a user, a namespace), so that
// one key's flood is its own: it neither slows the others nor spends
// what they share (the API server's reviews, the Events client's rate).
// Keys idle for keyIdle are forgotten; past maxKeys, a new key is
// refused until some are (memory stays bounded whoever mints keys).
type keyedLimits struct {
	every time.Duration
	burst int

	mu   sync.Mutex
	keys map[string]*keyLimit
}

type keyLimit struct {
	lim  *rate.Limiter
	used time.Time
}

const (
	keyIdle = 10 * time.Minute
	maxKeys = 16384
)

func newKeyedLimits(every time.Duration, burst int) *keyedLimits {
	return &keyedLimits{every: every, burst: burst, keys: map[string]*keyLimit{}}
}

// allow takes one token of key's bucket.
func (l *keyedLimits) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := l.keys[key]
	if !ok {
		if len(l.keys) >= maxKeys {
			for name, x := range l.keys {
				if now.Sub(x.used) > keyIdle {
					delete(l.keys, name)
				}
			}
			if len(l.keys) >= maxKeys {
				return false
			}
		}
		k = &keyLimit{lim: rate.NewLimiter(rate.Every(l.every), l.burst)}
		l.keys[key] = k
	}
	k.used = now
	return k.lim.AllowN(now, 1)
}
