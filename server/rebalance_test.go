package server

import (
	"reflect"
	"testing"
)

func TestPlanMoves(t *testing.T) {
	cases := []struct {
		name     string
		mine     int
		peers    map[string]int
		maxMoves int
		want     []moveTarget
	}{
		{"alone", 100, nil, 500, nil},
		{"even", 34, map[string]int{"b": 33, "c": 33}, 500, nil},
		{"within tolerance", 36, map[string]int{"b": 32, "c": 32}, 500, nil},
		{"nothing here", 0, map[string]int{"b": 50}, 500, nil},
		{"returned server gets half of the excess from each", 50, map[string]int{"b": 50, "c": 0}, 500, []moveTarget{{"c", 16}}},
		{"bounded per interval", 5000, map[string]int{"b": 5000, "c": 0}, 500, []moveTarget{{"c", 500}}},
		{"two below share split by what they lack", 90, map[string]int{"b": 10, "c": 0, "d": 0}, 500,
			[]moveTarget{{"c", 25}, {"d", 25}, {"b", 15}}},
		{"peers above the share get nothing", 60, map[string]int{"b": 45, "c": 15}, 500, []moveTarget{{"c", 20}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := planMoves(tc.mine, tc.peers, 0.1, tc.maxMoves)
			if len(got) == 0 && len(tc.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("planMoves(%d, %v) = %v; want %v", tc.mine, tc.peers, got, tc.want)
			}
			sum := 0
			for _, m := range got {
				sum += m.n
			}
			if sum > tc.maxMoves {
				t.Fatalf("%d moves; at most %d", sum, tc.maxMoves)
			}
		})
	}
}
