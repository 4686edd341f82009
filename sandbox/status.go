package sandbox

import "slices"

// Status is where a box is in its lifecycle:
//
//	creating ──► running ──► stopping ──► stopped ──► starting ──► running
//	    │           │            ▲  │         ▲            │
//	    │           └────────────┘  │         │            │
//	    ├──► stopping (a stop of a box whose start was abandoned)
//	    └───────────┴───────────────┴─► failed ┘◄──────────┘
//
// Any status may move to destroying; a destroyed box's row is deleted.
// starting is the restart of a stopped (or failed) box. A warm pool's box
// goes creating ──► pooled (booted and warmed, owned by nobody) ──► running
// when create_box claims it; a pooled box whose process died goes to
// stopped (or failed) and is destroyed, never restarted. Every change goes
// through Manager.transition, which checks this table.
type Status string

// Statuses.
const (
	StatusCreating   Status = "creating"
	StatusPooled     Status = "pooled"
	StatusStarting   Status = "starting"
	StatusRunning    Status = "running"
	StatusStopping   Status = "stopping"
	StatusStopped    Status = "stopped"
	StatusFailed     Status = "failed"
	StatusDestroying Status = "destroying"
)

// Statuses lists every status, in lifecycle order.
var Statuses = []Status{StatusCreating, StatusPooled, StatusStarting, StatusRunning, StatusStopping, StatusStopped, StatusFailed, StatusDestroying}

// transitions is the single table of allowed status changes.
var transitions = map[Status][]Status{
	StatusCreating:   {StatusRunning, StatusPooled, StatusStopping, StatusFailed, StatusDestroying},
	StatusPooled:     {StatusRunning, StatusStopped, StatusFailed, StatusDestroying},
	StatusStarting:   {StatusRunning, StatusStopping, StatusStopped, StatusFailed, StatusDestroying},
	StatusRunning:    {StatusStopping, StatusStopped, StatusFailed, StatusDestroying},
	StatusStopping:   {StatusStopped, StatusFailed, StatusDestroying},
	StatusStopped:    {StatusStarting, StatusDestroying},
	StatusFailed:     {StatusStarting, StatusStopped, StatusDestroying},
	StatusDestroying: {StatusFailed},
}

// CanTransition reports whether a box may go from one status to another.
func CanTransition(from, to Status) bool { return slices.Contains(transitions[from], to) }

// canReach lists the statuses from which a box may move to status to, in
// lifecycle order: the "allowed from" list of every action, derived from
// the table instead of written out again.
func canReach(to Status) []Status {
	var from []Status
	for _, s := range Statuses {
		if CanTransition(s, to) {
			from = append(from, s)
		}
	}
	return from
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool { _, ok := transitions[s]; return ok }

// Live reports whether a box in status s may have a process running.
func (s Status) Live() bool {
	return s == StatusCreating || s == StatusPooled || s == StatusStarting || s == StatusRunning || s == StatusStopping
}

// requireStatus fails with ErrFailedPrecondition unless s is one of allowed.
func requireStatus(id, action string, s Status, allowed ...Status) error {
	if slices.Contains(allowed, s) {
		return nil
	}
	return Errorf(ErrFailedPrecondition, "cannot %s box %s while it is %s", action, id, s)
}
