package attach

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/safeattach/safeattach/preflight"
)

// TestAssumedAgentIsTheGoldenOne: the rules' golden verdicts for "no
// agent given" are computed from the agent FindAgent assumes.
func TestAssumedAgentIsTheGoldenOne(t *testing.T) {
	data, err := os.ReadFile("../conflicts/testdata/agents/assumed.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden preflight.Agent
	if err := json.Unmarshal(data, &golden); err != nil {
		t.Fatal(err)
	}
	if got := assumedAgent(); !reflect.DeepEqual(*got, golden) {
		t.Errorf("assumedAgent() = %+v, golden %+v", *got, golden)
	}
}
