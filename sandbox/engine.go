package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/boxlite-ai/boxlite-mcp/guestagent/wire"
	"net"
	"time"

	"github.com/boxlite-ai/boxlite-mcp/persist"
)

// ErrNotRunning is returned by Engine.Recover when the box's process is gone.
var ErrNotRunning = errors.New("box process is not running")

// Spec is everything an engine needs to run a box.
type Spec struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Owner is who created the box (a Remote engine labels its objects
	// with it; local engines need not).
	Owner     string            `json:"owner,omitempty"`
	Image     string            `json:"image"`
	CPUs      int               `json:"cpus"`
	MemoryMiB int               `json:"memory_mib"`
	DiskMiB   int               `json:"disk_mib,omitempty"`
	Network   bool              `json:"network"`
	Env       map[string]string `json:"env,omitempty"`
	// NetworkAllow is the box's allow list (see package network); with it
	// Network is true and only those destinations are reachable.
	NetworkAllow []string `json:"network_allow,omitempty"`
	// WorkDir, UID and GID are the defaults of runs from the image config
	// (WorkingDir, User); empty: DefaultWorkDir, as root. The manager
	// applies them; engines need not.
	WorkDir string  `json:"work_dir,omitempty"`
	UID     *uint32 `json:"uid,omitempty"`
	GID     *uint32 `json:"gid,omitempty"`
	// RuntimeImageConfig: the engine's runtime applies the image's env,
	// working directory and user (a Remote engine's box); runs leave
	// WorkDir and the user unset so the agent's own apply.
	RuntimeImageConfig bool `json:"runtime_image_config,omitempty"`
	// ImageID is the identity of the image build the box was created from
	// (image.Identity; set on pooled boxes, which a rebuild replaces).
	ImageID string `json:"image_id,omitempty"`
	// ClaimEnv is the env create_box asked for when it claimed a pooled
	// box, whose agent had started without it: the manager adds it to every
	// run (it is in Env too, so a restarted box's agent has it).
	ClaimEnv map[string]string `json:"claim_env,omitempty"`
	// BoxDir is the box's private directory (home/boxes/<id>); it survives
	// stop/start and is removed by Destroy.
	BoxDir string `json:"box_dir"`
	// Socket is the path where the agent's unix socket must appear
	// (home/run/<short-id>.sock; short because sun_path is 108 bytes).
	Socket string `json:"socket"`
	// IDRange is the index of the box's own range of host ids, allocated in
	// the registry and never shared by two boxes (see HostIDBase). It comes
	// from the registry row, not from the stored spec.
	IDRange int `json:"-"`
	// FromSnapshot is set on boxes made from a snapshot (see Snapshotter).
	FromSnapshot *SnapshotSource `json:"from_snapshot,omitempty"`
}

// Host id ranges: box ids 0..IDRangeSize-1 of range i are host ids
// IDRangeFirst + i*IDRangeSize onwards, far above what /etc/subuid usually
// hands out and below 2^31. Range 0 is the range every jail box shared
// before ranges were allocated per box.
const (
	IDRangeFirst = 1_000_000_000
	IDRangeSize  = 65536
)

// GuestEnv is the environment of the box's agent and, through it, of every
// run: the base environment, the box's id, then the box's own variables.
func (s Spec) GuestEnv() []string {
	env := append(wire.BaseEnv(), "BOXLITE_BOX_ID="+s.ID)
	for k, v := range s.Env {
		env = append(env, k+"="+v)
	}
	return env
}

// Hostname is the box's host name: its name, else box-<last 8 of its id>.
func (s Spec) Hostname() string {
	if s.Name != "" {
		return s.Name
	}
	return "box-" + s.ID[max(len(s.ID)-8, 0):]
}

// HostIDBase is the host uid (and gid) that root of the box maps to.
func (s Spec) HostIDBase() (uint32, error) {
	if s.IDRange < 0 || s.IDRange >= persist.MaxIDRanges {
		return 0, Errorf(ErrInternal, "box %s has no host id range (%d)", s.ID, s.IDRange)
	}
	return IDRangeFirst + uint32(s.IDRange)*IDRangeSize, nil
}

// HelperUID is the host uid (and gid) of the box's network helper, which
// runs confined (package sandbox/confine): the last id of the box's range.
// A VM box's VMM runs as HostIDBase itself (the range has no other use
// there).
func (s Spec) HelperUID() (uint32, error) {
	base, err := s.HostIDBase()
	return base + IDRangeSize - 1, err
}

// Handle is an engine's opaque, versioned record of a running box, persisted
// so that any server process can reattach to the box.
type Handle struct {
	Version int             `json:"version"`
	Engine  string          `json:"engine"`
	State   json.RawMessage `json:"state"`
}

// Availability says whether an engine can run boxes on this host, and why not.
type Availability struct {
	Usable bool `json:"usable"`
	// Reason is one line: why it is unusable, or what it will use.
	Reason string `json:"reason"`
	// Details are further facts (checks that passed or failed).
	Details []string `json:"details,omitempty"`
	// Isolation describes the isolation strength, e.g. "microVM (KVM)".
	Isolation string `json:"isolation"`
}

// Engine runs boxes. Lifecycle: Start (or Recover after a restart), any
// number of Dial, then Stop and/or Destroy. Stop and Destroy are idempotent
// and safe after a failed Start. Implementations must be safe for
// concurrent use by several boxes, and must keep all per-box state in the
// Handle and the box directory so that another server process can take over.
type Engine interface {
	// Name is the engine's name: "jail", "qemu" or "krun".
	Name() string
	// Available reports whether the engine can run boxes here.
	Available(ctx context.Context) Availability
	// Start boots the box and returns only once its agent answered the
	// hello. The box process is detached: it outlives ctx and the server.
	// A stopped box is started again from the same BoxDir, so its files survive.
	Start(ctx context.Context, spec Spec) (Handle, error)
	// Recover checks that the box described by h still runs (pid and start
	// time) and answers. It returns ErrNotRunning if the process is gone,
	// having cleaned up what the dead box left. Idempotent.
	Recover(ctx context.Context, spec Spec, h Handle) error
	// Dial opens a connection to the box's agent.
	Dial(ctx context.Context, spec Spec, h Handle) (net.Conn, error)
	// Wait blocks until the box process described by h has exited (nil;
	// also at once when it is already gone) or ctx ends (ctx's error). It
	// never reaps: the engine's Start owns its child's wait.
	Wait(ctx context.Context, spec Spec, h Handle) error
	// Stop shuts the box down: the agent's shutdown first, then signals
	// after grace. Files in BoxDir are kept.
	Stop(ctx context.Context, spec Spec, h Handle, grace time.Duration) error
	// Destroy kills whatever still runs and removes every resource of the
	// box, BoxDir included. h may be zero (a box that never started).
	Destroy(ctx context.Context, spec Spec, h Handle) error
}

// ExclusiveChannel is implemented by engines whose agent channel takes one
// host connection at a time (a virtio-serial port). The manager then holds
// a box's connection only while calls are in flight, so other server
// processes on the same home can reach the box between calls.
type ExclusiveChannel interface {
	Exclusive(h Handle) bool
}
