// Package versions is the one reader of the version strings safeattach
// meets, which are not semver: it turns each into the form a version
// library orders correctly (conflicts feeds the result to
// github.com/hashicorp/go-version), and derives a Java feature release.
// The strings come from other processes' files: lengths and segment
// counts are bounded.
package versions
