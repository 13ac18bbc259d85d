package attach

// ResultSchemaVersion is the version of the JSON results' shape: bumped
// when a field changes meaning or goes away (adding a field does not
// bump it).
const ResultSchemaVersion = 1

// Envelope is what every JSON result carries, whatever the command and
// the outcome, so that a CI gate reads one shape: the CLI's --json of
// every command, and an embedder's own answers (examples/deploy-agent's
// HTTP API). Commands put their own fields beside it.
type Envelope struct {
	SchemaVersion int     `json:"schema_version"`
	Command       string  `json:"command"`
	Outcome       Outcome `json:"outcome"`
	ExitCode      int     `json:"exit_code"`
	Error         string  `json:"error,omitempty"`
}

// NewEnvelope is command's envelope for err (nil: done), with the exit
// code the CLI gives that outcome.
func NewEnvelope(command string, err error) Envelope {
	o := OutcomeOf(err)
	e := Envelope{SchemaVersion: ResultSchemaVersion, Command: command, Outcome: o, ExitCode: o.ExitCode()}
	if err != nil {
		e.Error = err.Error()
	}
	return e
}

// ExitCode is the CLI's exit code for an outcome (the README's table):
// 0 done, 1 invalid or other error, 2 refused, 3 failed, 4 timed out,
// 130 interrupted (the CLI gives 128 + the signal's number).
func (o Outcome) ExitCode() int {
	switch o {
	case OutcomeOK:
		return 0
	case OutcomeRefused:
		return 2
	case OutcomeFailed:
		return 3
	case OutcomeTimedOut:
		return 4
	case OutcomeInterrupted:
		return 130
	}
	return 1
}
