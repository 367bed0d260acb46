package gateway

import (
	"math"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The expected texts are Python's str() and json.dumps() of what PyYAML's
// safe_load makes of the same YAML.
func TestPyValue(t *testing.T) {
	tests := []struct {
		yaml, str, json string
	}{
		{"0123", "83", "83"},
		{"08", "08", `"08"`},
		{"+15551234567", "15551234567", "15551234567"},
		{"-0x1f", "-31", "-31"},
		{"0b101", "5", "5"},
		{"1_000", "1000", "1000"},
		{"1:30", "90", "90"},
		{"1.5", "1.5", "1.5"},
		{"1e5", "1e5", `"1e5"`},
		{"1.0e+5", "100000.0", "100000.0"},
		{"1.", "1.0", "1.0"},
		{"0.00001", "1e-05", "1e-05"},
		{"1e+16", "1e+16", `"1e+16"`},
		{"100000000000000000.0", "1e+17", "1e+17"},
		{"190:20:30.15", "685230.15", "685230.15"},
		{".inf", "inf", "Infinity"},
		{"-.inf", "-inf", "-Infinity"},
		{"yes", "True", "true"},
		{"Off", "False", "false"},
		{"y", "y", `"y"`},
		{"~", "None", "null"},
		{"", "None", "null"},
		{"'yes'", "yes", `"yes"`},
		{"!!str 12", "12", `"12"`},
		{"!!int '12'", "12", "12"},
		{"\"caf\u00e9 \\t\"", "caf\u00e9 \t", `"caf\u00e9 \t"`},
		{"\"\U0001F600\"", "\U0001F600", `"\ud83d\ude00"`},
		{"[x, 1, yes, null, 1.5]", "", `["x", 1, true, null, 1.5]`},
		{"{b: 1, a: [2], 1: x, true: y, ~: z}", "", `{"b": 1, "a": [2], "1": "y", "null": "z"}`},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte("v: "+tt.yaml+"\n"), &doc); err != nil {
				t.Fatal(err)
			}
			v, ok := (&config{}).toPy(doc.Content[0].Content[1], 0)
			if !ok {
				t.Fatal("not converted")
			}
			if tt.str != "" && v.str() != tt.str {
				t.Errorf("str() = %q, want %q", v.str(), tt.str)
			}
			if got := v.json(); got != tt.json {
				t.Errorf("json.dumps() = %s, want %s", got, tt.json)
			}
		})
	}
}

func TestPyFloatRepr(t *testing.T) {
	for f, want := range map[float64]string{
		0: "0.0", math.Copysign(0, -1): "-0.0", 1: "1.0", 0.1: "0.1", 1e15: "1000000000000000.0", 1e16: "1e+16",
		0.0001: "0.0001", 0.00001: "1e-05", 123.456: "123.456", -2.5e-7: "-2.5e-07", 1.7976931348623157e308: "1.7976931348623157e+308",
	} {
		if got := pyFloatRepr(f, false); got != want {
			t.Errorf("repr(%g) = %q, want %q", f, got, want)
		}
	}
}
