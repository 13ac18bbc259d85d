package hotspot

import (
	"context"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Load loads a JVMTI agent library by absolute path with options.
//
// How JDKs report the result of load (the status line is always read
// first):
//
//	JDK      success                   failure
//	8        "0\n<rc>\n"               non-zero status, or <rc> ≠ 0
//	9–20     "0\nreturn code: <rc>\n"  "-1" + text, or rc ≠ 0
//	21+      "0\nreturn code: <rc>\n"  status still 0 with text only:
//	                                   "<name> was not loaded." + dlerror,
//	                                   "Agent_OnAttach is not available in <name>",
//	                                   "Dynamic agent loading is not enabled..."
//
// Rule: status ≠ 0 → failure; else find "return code: N" (or JDK 8's bare
// number) and fail if N ≠ 0; if neither is there the text is the error.
// A failure is an *AgentError.
func (c *Client) Load(ctx context.Context, path, options string) (*Response, error) {
	r, err := c.Run(ctx, "load", path, "true", options)
	if err != nil {
		if ce, ok := err.(*CommandError); ok {
			return r, &AgentError{ReturnCode: ce.Code, Message: ce.Message}
		}
		return nil, err
	}
	return r, parseLoadResult(r.Output)
}

var returnCodeRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?m)^return code: (-?[0-9]+)\s*$`) })

// parseLoadResult interprets the body of a load reply whose status was 0.
func parseLoadResult(body []byte) error {
	text := strings.TrimSpace(string(body))
	if m := returnCodeRe().FindStringSubmatch(text); m != nil {
		rc, _ := strconv.Atoi(m[1])
		if rc != 0 {
			rest := strings.TrimSpace(strings.Replace(text, m[0], "", 1))
			return &AgentError{ReturnCode: rc, Message: rest}
		}
		return nil
	}
	if rc, err := strconv.Atoi(text); err == nil { // JDK 8: the bare return code
		if rc != 0 {
			return &AgentError{ReturnCode: rc}
		}
		return nil
	}
	if text == "" {
		return nil // JDKs that print nothing on success
	}
	return &AgentError{Message: text}
}

// Jcmd runs a diagnostic command line ("VM.version", "Thread.print -l").
func (c *Client) Jcmd(ctx context.Context, out io.Writer, command string) (int, error) {
	return c.Execute(ctx, out, "jcmd", command)
}

// ThreadDump prints all threads; locks adds lock information ("-l").
func (c *Client) ThreadDump(ctx context.Context, out io.Writer, locks bool) (int, error) {
	arg := ""
	if locks {
		arg = "-l"
	}
	return c.Execute(ctx, out, "threaddump", arg)
}

// Properties returns the system properties in java.util.Properties format.
func (c *Client) Properties(ctx context.Context) (*Response, error) {
	return c.Run(ctx, "properties")
}

// AgentProperties returns the agent properties.
func (c *Client) AgentProperties(ctx context.Context) (*Response, error) {
	return c.Run(ctx, "agentProperties")
}

// PrintFlag prints one VM flag.
func (c *Client) PrintFlag(ctx context.Context, name string) (*Response, error) {
	return c.Run(ctx, "printflag", name)
}

// SetFlag sets a manageable VM flag.
func (c *Client) SetFlag(ctx context.Context, name, value string) (*Response, error) {
	return c.Run(ctx, "setflag", name, value)
}

// DumpHeap writes an HPROF heap dump to path (in the JVM's filesystem);
// live restricts it to reachable objects.
func (c *Client) DumpHeap(ctx context.Context, path string, live bool) (*Response, error) {
	mode := "-all"
	if live {
		mode = "-live"
	}
	return c.Run(ctx, "dumpheap", path, mode)
}

// InspectHeap prints a class histogram.
func (c *Client) InspectHeap(ctx context.Context, out io.Writer) (int, error) {
	return c.Execute(ctx, out, "inspectheap")
}

// DataDump makes the JVM print a thread dump to its own stdout.
func (c *Client) DataDump(ctx context.Context) (*Response, error) {
	return c.Run(ctx, "datadump")
}
