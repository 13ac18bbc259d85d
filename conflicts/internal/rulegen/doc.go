// Command rulegen writes the embedded rule files as Go data, so that the
// safeattach binary starts without parsing YAML:
//
//	go generate ./conflicts
//
// It parses (and so checks) every rules/*.yaml with conflicts.ParseRules
// and writes a gofmt -s clean function returning the rules, long strings
// broken into concatenations of at most about 90 characters.
package main
