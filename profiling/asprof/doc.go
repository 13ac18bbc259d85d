// Package asprof is async-profiler's configuration as its launcher,
// asprof, takes it on the command line, and the one place where it is
// turned into the agent's option string (the text after "start," that
// the agent parses). Each option is passed as asprof 4.x passes it
// (src/main/main.cpp in async-profiler's tree): values as text ("-j 50/20"
// is "jstackdepth=50/20"), a title escaped for HTML, features joined with
// "+", a filter's commas as ";", and no event= unless an event was asked
// for (so that --alloc alone profiles allocations only).
//
// Every value is checked before it is joined: the agent splits its
// options at ",", so a value that still holds one — or a control
// character — would smuggle in options of its own (an annotation, a
// request from an HTTP API); it is refused with the option's name.
package asprof
