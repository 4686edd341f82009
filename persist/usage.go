package persist

import (
	"context"
	"database/sql"
	"strings"
)

// UsageQuery says how to count usage. Status values belong to the sandbox
// package, so the caller names the ones whose boxes may have a process.
type UsageQuery struct {
	Owner string   // count this owner's boxes in Usage.OwnerBoxes
	Live  []string // statuses whose boxes hold memory and CPUs
	// Engine, with Owner, counts the owner's live boxes of this engine in
	// Usage.OwnerEngineLive (a warm pool's fill: PoolOwner's boxes).
	Engine string
	// Reclaim is the status of boxes that may be removed to make room
	// (a warm pool's ready boxes): PoolOwner's boxes in it are summed in
	// Usage.Reclaim*.
	Reclaim string
	// Remote names engines whose boxes hold none of this host's memory
	// and CPUs (they run elsewhere): they are not counted as live.
	Remote []string
}

// Usage is what the recorded boxes hold.
type Usage struct {
	Boxes         int   // every box
	OwnerBoxes    int   // the query owner's boxes
	Live          int   // boxes in a live status
	LiveMemoryMiB int64 // their spec's memory_mib, summed
	LiveCPUs      int64 // their spec's cpus, summed
	// OwnerEngineLive counts the query owner's live boxes of the query engine.
	OwnerEngineLive int
	// ReclaimBoxes and ReclaimMemoryMiB are PoolOwner's boxes in status
	// Reclaim, and their memory.
	ReclaimBoxes     int
	ReclaimMemoryMiB int64
}

// usage counts inside tx, leaving out box except (when not "").
func usage(ctx context.Context, tx *sql.Tx, q UsageQuery, except string) (Usage, error) {
	live, liveArgs := "0", []any{}
	if len(q.Live) > 0 {
		live = "status IN (?" + strings.Repeat(",?", len(q.Live)-1) + ")"
		for _, s := range q.Live {
			liveArgs = append(liveArgs, s)
		}
		if len(q.Remote) > 0 {
			live = "(" + live + " AND engine NOT IN (?" + strings.Repeat(",?", len(q.Remote)-1) + "))"
			for _, e := range q.Remote {
				liveArgs = append(liveArgs, e)
			}
		}
	}
	args := []any{q.Owner}
	for range 3 { // the live filter appears three times, then once more below
		args = append(args, liveArgs...)
	}
	args = append(args, q.Owner, q.Engine)
	args = append(args, liveArgs...)
	args = append(args, PoolOwner, q.Reclaim, PoolOwner, q.Reclaim, except)
	var u Usage
	err := tx.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE owner = ?),
		count(*) FILTER (WHERE `+live+`),
		coalesce(sum(coalesce(json_extract(spec, '$.memory_mib'), 0)) FILTER (WHERE `+live+`), 0),
		coalesce(sum(coalesce(json_extract(spec, '$.cpus'), 0)) FILTER (WHERE `+live+`), 0),
		count(*) FILTER (WHERE owner = ? AND engine = ? AND `+live+`),
		count(*) FILTER (WHERE owner = ? AND status = ?),
		coalesce(sum(coalesce(json_extract(spec, '$.memory_mib'), 0)) FILTER (WHERE owner = ? AND status = ?), 0)
		FROM boxes WHERE id != ?`, args...).Scan(&u.Boxes, &u.OwnerBoxes, &u.Live, &u.LiveMemoryMiB, &u.LiveCPUs, &u.OwnerEngineLive,
		&u.ReclaimBoxes, &u.ReclaimMemoryMiB)
	return u, err
}
