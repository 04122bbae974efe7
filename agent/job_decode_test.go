package agent

import (
	"errors"
	"strings"
	"testing"

	"tether/structs"
)

func TestDecodeJob_TaskDrivers(t *testing.T) {
	job := func(task string) []byte {
		return []byte(`{"Job":{"ID":"j","TaskGroups":[{"Name":"g","Tasks":[` + task + `]}]}}`)
	}
	cases := []struct {
		name    string
		task    string
		wantErr string // empty: accepted
	}{
		{"raw_exec", `{"Name":"t","Driver":"raw_exec","Config":{"command":"/bin/true","args":["-x"]}}`, ""},
		{"raw_exec without command", `{"Name":"t","Driver":"raw_exec","Config":{}}`, "Config.command: missing command"},
		{"raw_exec bad args", `{"Name":"t","Driver":"raw_exec","Config":{"command":"x","args":[1]}}`, "Config.args: must be a list of strings"},
		{"mock_driver, every key", `{"Name":"t","Driver":"mock_driver","Config":{
			"run_for":"10s","exit_code":7,"exit_signal":9,"exit_err_msg":"boom","start_error":"e",
			"start_error_recoverable":true,"start_block_for":"1s","kill_after":"2s",
			"stdout_string":"hi\n","stdout_repeat":3,"stdout_repeat_duration":"1s",
			"stderr_string":"err\n","stderr_repeat":1,"stderr_repeat_duration":"500ms"}}`, ""},
		{"mock_driver without config", `{"Name":"t","Driver":"mock_driver"}`, ""},
		{"mock_driver bad duration", `{"Name":"t","Driver":"mock_driver","Config":{"run_for":"soon"}}`, `Tasks[0].Config: run_for: invalid duration "soon"`},
		{"mock_driver bad type", `{"Name":"t","Driver":"mock_driver","Config":{"exit_code":"seven"}}`, "Config: exit_code: must be a number"},
		{"mock_driver bad bool", `{"Name":"t","Driver":"mock_driver","Config":{"start_error_recoverable":3}}`, "Config: start_error_recoverable: must be a bool"},
		{"mock_driver unknown key", `{"Name":"t","Driver":"mock_driver","Config":{"command":"/bin/true"}}`, `unknown mock_driver config key "command"`},
		// Nomad takes any driver: the scheduler finds no node for it.
		{"docker, another driver", `{"Name":"t","Driver":"docker","Config":{"image":"redis"}}`, ""},
		{"no driver", `{"Name":"t","Config":{}}`, "Driver: missing task driver"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j, _, err := decodeJobRegister(job(tc.task))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if got := j.TaskGroups[0].Tasks[0].Driver; !strings.HasPrefix(tc.name, got) {
					t.Fatalf("Driver = %q", got)
				}
				return
			}
			var se *structs.Error
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &se) || se.Code != 400 {
				t.Fatalf("err = %v; want a 400 containing %q", err, tc.wantErr)
			}
		})
	}
}
