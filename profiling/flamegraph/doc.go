// Package flamegraph draws folded stacks as a flame graph: one
// self-contained HTML file (its script and style inline, no network, no
// fonts fetched) that zooms on a click, names a frame and its share on
// hover, and highlights what a search matches. Folded stacks are the
// collapsed format of async-profiler and of Brendan Gregg's
// flamegraph.pl — `root;caller;callee count` — which the package also
// reads and writes, so that any collapsed output can be drawn, not only
// the stacks this project folds from a JFR recording.
//
// Frame names come from the profiled process and are untrusted: in the
// HTML they are data of a JSON document that no byte sequence can close
// early, and the page's script puts them on the screen only as text.
// The package uses the standard library alone, so that the CLI can link
// it without the JFR and protobuf libraries.
package flamegraph
