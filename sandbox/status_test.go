package sandbox

import (
	"errors"
	"testing"
)

// TestTransitionTable checks every (from, to) pair against the lifecycle.
func TestTransitionTable(t *testing.T) {
	allowed := map[[2]Status]bool{
		{StatusCreating, StatusRunning}: true, {StatusCreating, StatusFailed}: true, {StatusCreating, StatusDestroying}: true,
		{StatusStarting, StatusRunning}: true, {StatusStarting, StatusStopped}: true, {StatusStarting, StatusFailed}: true, {StatusStarting, StatusDestroying}: true,
		{StatusRunning, StatusStopping}: true, {StatusRunning, StatusStopped}: true, {StatusRunning, StatusFailed}: true, {StatusRunning, StatusDestroying}: true,
		{StatusStopping, StatusStopped}: true, {StatusStopping, StatusFailed}: true, {StatusStopping, StatusDestroying}: true,
		{StatusStopped, StatusStarting}: true, {StatusStopped, StatusDestroying}: true,
		{StatusFailed, StatusStarting}: true, {StatusFailed, StatusStopped}: true, {StatusFailed, StatusDestroying}: true,
		{StatusDestroying, StatusFailed}: true,
	}
	n := 0
	for _, from := range Statuses {
		for _, to := range Statuses {
			want := allowed[[2]Status{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v; want %v", from, to, got, want)
			}
			n++
		}
	}
	if n != 49 {
		t.Fatalf("checked %d pairs", n)
	}
	if CanTransition("bogus", StatusRunning) || Status("bogus").Valid() {
		t.Error("unknown status accepted")
	}
}

func TestRequireStatusClass(t *testing.T) {
	err := requireStatus("b1", "stop", StatusStopped, StatusRunning)
	if !errors.Is(err, ErrFailedPrecondition) || PublicMessage(err) != "cannot stop box b1 while it is stopped" {
		t.Fatalf("%v", err)
	}
	if requireStatus("b1", "stop", StatusRunning, StatusRunning) != nil {
		t.Fatal("allowed status refused")
	}
}
