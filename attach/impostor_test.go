package attach

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/internal/testenv"
)

// TestLiveFloodingJVMCostsABoundedReply: a JVM whose own code took over
// its attach socket (its credentials: the peer check passes) and answers
// every command with endless bytes costs the caller one bounded reply:
// the jcmd fails with hotspot.ErrReplyTooLong (an attach failure), it
// does not read until the deadline into memory.
func TestLiveFloodingJVMCostsABoundedReply(t *testing.T) {
	t.Parallel()
	p := testenv.StartAttachImpostor(t, "flood")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Jcmd(ctx, p.PID, "JFR.check", Options{})
	if !errors.Is(err, hotspot.ErrReplyTooLong) || OutcomeOf(err) != OutcomeFailed {
		t.Fatalf("jcmd to a flooding JVM: %v (outcome %s), want %v", err, OutcomeOf(err), hotspot.ErrReplyTooLong)
	}
}
