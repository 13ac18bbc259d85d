package conflicts

import (
	"os"
	"testing"
)

// FuzzParseRules: any bytes give rules or an error with a position, never
// a panic.
func FuzzParseRules(f *testing.F) {
	for _, p := range []string{"rules/default.yaml", "testdata/rules/custom.yaml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("rules:\n  - &a {id: x}\n  - *a\n"))
	if bomb, err := os.ReadFile("testdata/hostile/alias-bomb.yaml"); err == nil {
		f.Add(bomb)
	}
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
