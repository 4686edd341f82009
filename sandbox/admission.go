package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/boxlite-ai/boxlite-mcp/persist"
)

// Admission: before a box is recorded (create) or started again (a stopped
// box used), the memory of every live box on this home, this one included,
// must fit Config.MaxMemoryMiB, and the box counts must fit MaxBoxes and
// OwnerMaxBoxes. The check and the write are one SQLite transaction, so two
// servers on one home cannot both take the last slot.

// liveStatuses are the statuses whose boxes hold memory and CPUs.
var liveStatuses = func() []string {
	var s []string
	for _, st := range Statuses {
		if st.Live() {
			s = append(s, string(st))
		}
	}
	return s
}()

// reclaim is what an admitted box needs the warm pool to give up: ready
// pooled boxes count against the limits, but an owner's box comes first.
type reclaim struct {
	boxes  int
	memMiB int64
}

// admitNew checks a new box of spec for owner against u; what only fits
// once pooled boxes are gone is admitted and set in need.
func (m *Manager) admitNew(owner string, spec Spec, need *reclaim) func(persist.Usage) error {
	return func(u persist.Usage) error {
		*need = reclaim{}
		if m.cfg.MaxBoxes > 0 && u.Boxes >= m.cfg.MaxBoxes {
			if u.Boxes-u.ReclaimBoxes >= m.cfg.MaxBoxes {
				return Errorf(ErrResourceExhausted, "this server holds its limit of %d boxes; destroy boxes you no longer need (list_boxes shows them)", m.cfg.MaxBoxes)
			}
			need.boxes = u.Boxes - m.cfg.MaxBoxes + 1
		}
		if m.cfg.OwnerMaxBoxes > 0 && u.OwnerBoxes >= m.cfg.OwnerMaxBoxes {
			return Errorf(ErrResourceExhausted, "you have %d boxes, the most one owner may have here; destroy boxes you no longer need (list_boxes shows them)", u.OwnerBoxes)
		}
		if spec.RuntimeImageConfig {
			return nil // the cluster's scheduler and quotas admit it
		}
		if free := int64(m.cfg.MaxMemoryMiB) - u.LiveMemoryMiB; int64(spec.MemoryMiB) > free && int64(spec.MemoryMiB) <= free+u.ReclaimMemoryMiB {
			need.memMiB = int64(spec.MemoryMiB) - free
			return nil
		}
		return m.admitMemory(spec, u)
	}
}

// admitMemory checks that spec's memory fits beside the live boxes of u.
func (m *Manager) admitMemory(spec Spec, u persist.Usage) error {
	free := int64(m.cfg.MaxMemoryMiB) - u.LiveMemoryMiB
	if int64(spec.MemoryMiB) > free {
		return Errorf(ErrResourceExhausted, "the box needs %d MiB of memory but only %d MiB of this server's %d MiB are free (%d running boxes hold %d MiB); stop or destroy boxes, or ask for less memory",
			spec.MemoryMiB, max(free, 0), m.cfg.MaxMemoryMiB, u.Live, u.LiveMemoryMiB)
	}
	return nil
}

// transitionStarting moves a stopped or failed box to starting if its
// memory fits beside what runs at that moment.
func (m *Manager) transitionStarting(ctx context.Context, id string, spec Spec) error {
	_, err := m.store.UpdateAdmitted(ctx, id, persist.UsageQuery{Live: liveStatuses, Remote: m.remoteEngines()}, func(b *persist.Box, u persist.Usage) error {
		if !CanTransition(Status(b.Status), StatusStarting) {
			return Errorf(ErrFailedPrecondition, "box %s cannot go from %s to %s", id, b.Status, StatusStarting)
		}
		if !spec.RuntimeImageConfig { // a remote box holds no host memory
			if err := m.admitMemory(spec, u); err != nil {
				return err
			}
		}
		b.Status, b.StatusReason = string(StatusStarting), ""
		return nil
	})
	var e *Error
	if err != nil && !errors.As(err, &e) {
		return Wrapf(ErrInternal, err, "could not record the start of box %s", id)
	}
	return err
}

// hostMemoryMiB is the host's RAM (MemTotal), or 0 if unknown.
func hostMemoryMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			return kb >> 10
		}
	}
	return 0
}

// defaultMaxMemory is the host's RAM minus 1 GiB for the host itself.
func defaultMaxMemory() int {
	if mem := hostMemoryMiB(); mem > 2048 {
		return mem - 1024
	}
	return MaxMemoryMiB
}

func hostCPUs() int { return runtime.NumCPU() }
