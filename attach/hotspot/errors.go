package hotspot

import (
	"errors"
	"fmt"

	"github.com/safeattach/safeattach/internal/proc"
)

var (
	// ErrNoListener: the attach listener is not running and could not be
	// started (no socket appeared, or starting it was not safe).
	ErrNoListener = errors.New("attach listener not available")
	// ErrTimeout: the caller's deadline passed while the JVM was silent.
	ErrTimeout = errors.New("timed out waiting for the JVM")
	// ErrUntrustedSocket: the socket at the attach path is not the JVM's.
	ErrUntrustedSocket = proc.ErrUntrustedSocket
	// ErrTargetExited: the process exited during the attach.
	ErrTargetExited = errors.New("target process exited")
	// ErrRequestTooLong: an argument exceeds what the JVM's protocol accepts.
	ErrRequestTooLong = errors.New("request too long for the JVM's attach protocol")
	// ErrReplyTooLong: the JVM's answer went past Client.MaxReply.
	ErrReplyTooLong = errors.New("the JVM's answer is too long")
	// ErrConnectionClosed: the JVM closed the connection without a reply
	// (it rejected our credentials or the request).
	ErrConnectionClosed = errors.New("the JVM closed the connection without a reply")
)

// AgentError is a failed load: the agent's return code and the JVM's
// message (JDK 21+ reports failures as text after a 0 status).
type AgentError struct {
	ReturnCode int
	Message    string
}

func (e *AgentError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("agent load failed: return code %d", e.ReturnCode)
	}
	if e.ReturnCode != 0 {
		return fmt.Sprintf("agent load failed: return code %d: %s", e.ReturnCode, e.Message)
	}
	return "agent load failed: " + e.Message
}

// CommandError is a non-zero status line from the JVM.
type CommandError struct {
	Code    int
	Command string
	Message string
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%s failed with status %d: %s", e.Command, e.Code, e.Message)
}
