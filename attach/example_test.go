package attach_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/safeattach/safeattach/attach"
)

// Load attaches an agent only if the knowledge base finds it safe; a
// refusal carries the verdict, a hang a report made from outside.
func ExampleLoad() {
	pid := 12345
	res, err := attach.Load(context.Background(), pid, "/opt/async-profiler/lib/libasyncProfiler.so",
		"start,event=cpu,file=/tmp/profile.html", attach.Options{Timeout: 2 * time.Minute})
	var refused *attach.RefusedError
	var hung *attach.HangError
	switch {
	case errors.As(err, &refused):
		for _, f := range refused.Verdict.Findings {
			fmt.Println(f.Severity, f.Rule, f.Message, "remedy:", f.Remedy)
		}
	case errors.As(err, &hung):
		fmt.Println("the JVM stopped answering:", hung.Report.Conclusion)
	case err != nil:
		fmt.Println("attach failed:", err)
	default:
		fmt.Println("loaded in", res.Duration)
	}
}
