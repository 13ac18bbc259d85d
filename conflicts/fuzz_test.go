package conflicts

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseRules: any bytes give rules or an error with a position, never
// a panic.
func FuzzParseRules(f *testing.F) {
	for _, p := range []string{"rules/default.yaml", "testdata/rules/custom.yaml"} {
		var data []byte
		var err error
		if filepath.Dir(p) == "rules" {
			data, err = embedded.ReadFile(p)
		} else {
			data, err = os.ReadFile(p)
		}
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("rules:\n  - &a {id: x}\n  - *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := ParseRules("fuzz.yaml", data)
		if err == nil {
			for _, r := range rules {
				if r.ID == "" || len(r.Cases) == 0 {
					t.Fatalf("accepted an incomplete rule %+v", r)
				}
			}
		}
	})
}
