// Package printable makes text that a target wrote safe to show.
//
// The bytes safeattach reads back from a target — the agent's log= file,
// the profiler's text output, thread names and paths in its /proc — are
// written by the target's user, who may be anyone allowed to run a pod.
// A terminal does not show such bytes: it obeys them. An OSC 52 sequence
// (ESC ] 52 ; c ; <base64> BEL) writes the operator's clipboard, OSC 0
// retitles the window, CSI sequences move the cursor and repaint lines
// that were already printed, and a carriage return hides what came
// before it on the line. Log viewers render the same sequences when a
// log file is paged with less -R or tailed to a terminal.
//
// So every such text is passed through String (or Line, or a Writer)
// where it becomes a message: control characters other than newline and
// tab — C0, DEL and the C1 range U+0080–U+009F, which UTF-8 terminals
// take as 8-bit controls — are shown as escapes (\x1b, \x7f, \u009b), and
// so is every byte that is not part of valid UTF-8 (\xff). Everything
// else, including the backslash, is left as it is: clean text comes out
// unchanged, without a copy, and escaping is idempotent, so text escaped
// twice (by the library, then by a CLI that cannot know) reads the same.
//
// What is data rather than a message — a profile written to a file or a
// pipe — is never changed: the bytes are the caller's to have.
package printable
