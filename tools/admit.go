package tools

import (
	"fmt"
	"sync"
)

// Defaults of Config's call caps. A call in flight holds up to a few MiB
// on the server (its output buffers, the rich outputs a result can carry),
// so the caps bound the server's memory, and one owner cannot take all of
// it from the others.
const (
	DefaultMaxCalls      = 256
	DefaultOwnerMaxCalls = 64
)

// admission counts the tool calls in flight, in total and per owner.
type admission struct {
	max, ownerMax int

	mu     sync.Mutex
	total  int
	owners map[string]int
}

func newAdmission(max, ownerMax int) *admission {
	return &admission{max: max, ownerMax: min(ownerMax, max), owners: map[string]int{}}
}

// enter counts a call of owner in, or says which cap it is over. The
// message names only the caller's own count and the server's cap, never
// another owner's. A call that frees resources (destroy_box: an owner at
// the cap with calls stuck in a box must be able to end them) is held to
// the total only.
func (a *admission) enter(owner string, frees bool) (leave func(), refused string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.owners[owner] >= a.ownerMax && !frees:
		return nil, fmt.Sprintf("too many tool calls in flight: you have %d running (limit %d per client, --owner-max-calls); wait for some to finish and call again", a.owners[owner], a.ownerMax)
	case a.total >= a.max:
		return nil, fmt.Sprintf("the server is at its limit of %d tool calls in flight (--max-calls); call again in a moment", a.max)
	}
	a.total++
	a.owners[owner]++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.total--
			if a.owners[owner]--; a.owners[owner] == 0 {
				delete(a.owners, owner)
			}
		})
	}, ""
}
