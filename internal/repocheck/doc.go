// Package repocheck holds tests of the repository itself: it stands
// alone (every document a comment points to is in it), and it carries no
// build output.
package repocheck
