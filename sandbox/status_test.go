package sandbox

import (
	"errors"
	"slices"
	"testing"
)

// TestLifecycleWalks checks the table by the lifecycle it must allow and
// forbid, not by a copy of itself: every path a box takes is walkable, and
// the moves that would lose track of a process are refused.
func TestLifecycleWalks(t *testing.T) {
	walks := [][]Status{
		{StatusCreating, StatusRunning, StatusStopping, StatusStopped, StatusStarting, StatusRunning}, // create, idle stop, restart
		{StatusCreating, StatusFailed, StatusStarting, StatusRunning},                                 // failed create, retried on use
		{StatusCreating, StatusStopping, StatusStopped},                                               // stop of an abandoned create
		{StatusStarting, StatusStopping, StatusStopped},                                               // stop of an abandoned restart
		{StatusRunning, StatusStopped},                                                                // the process died on its own
		{StatusStopping, StatusFailed, StatusStopped},                                                 // a stop that failed, then settled
		{StatusRunning, StatusDestroying, StatusFailed, StatusDestroying},                             // destroy retried
		{StatusCreating, StatusPooled, StatusRunning, StatusStopping, StatusStopped},                  // warm pool: filled, claimed, used like any box
		{StatusPooled, StatusDestroying},                                                              // pool drained or its image replaced
		{StatusPooled, StatusStopped, StatusDestroying},                                               // a pooled box died: settled, then removed
	}
	for _, w := range walks {
		for i := 1; i < len(w); i++ {
			if !CanTransition(w[i-1], w[i]) {
				t.Errorf("walk %v: %s → %s refused", w, w[i-1], w[i])
			}
		}
	}
	refused := [][2]Status{
		{StatusStopped, StatusRunning},     // a stopped box runs only through starting
		{StatusFailed, StatusRunning},      // nor does a failed one
		{StatusDestroying, StatusRunning},  // nothing comes back from a destroy
		{StatusDestroying, StatusStopped},  // a destroy finishes by deleting the row
		{StatusStopped, StatusStopping},    // nothing to stop
		{StatusStopping, StatusRunning},    // a stop is not undone
		{StatusCreating, StatusStarting},   // a create is not a restart
		{StatusStopped, StatusFailed},      // a stopped box has no process that could fail
		{StatusDestroying, StatusStarting}, // a box being destroyed never starts
		{StatusRunning, StatusPooled},      // a claimed box never goes back to the pool
		{StatusStopped, StatusPooled},      // nor does a stopped one (its state is not pristine)
		{StatusStarting, StatusPooled},     // a restart is not a pool fill
		{StatusPooled, StatusStarting},     // a dead pooled box is destroyed, not restarted
		{StatusPooled, StatusStopping},     // a pooled box is destroyed, not stopped
	}
	for _, r := range refused {
		if CanTransition(r[0], r[1]) {
			t.Errorf("%s → %s allowed", r[0], r[1])
		}
	}
	for _, s := range Statuses {
		if s != StatusDestroying && !CanTransition(s, StatusDestroying) {
			t.Errorf("%s cannot be destroyed", s)
		}
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	if CanTransition("bogus", StatusRunning) || Status("bogus").Valid() {
		t.Error("unknown status accepted")
	}
}

func TestCanReachIsDerived(t *testing.T) {
	from := canReach(StatusStopping)
	want := []Status{StatusCreating, StatusStarting, StatusRunning}
	if !slices.Equal(from, want) {
		t.Fatalf("canReach(stopping) = %v; want %v", from, want)
	}
	for _, s := range Statuses {
		if slices.Contains(canReach(StatusStarting), s) != CanTransition(s, StatusStarting) {
			t.Errorf("canReach disagrees with the table for %s", s)
		}
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
