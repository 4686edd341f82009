package wire

// OpClone tells the agent of a VM resumed from a memory snapshot that it is
// now another box: it takes the new identity before any other call runs.
const OpClone Op = "clone"

// CapClone is the capability of agents that take OpClone.
const CapClone = "clone"

// MaxCloneSeed bounds CloneReq.Seed.
const MaxCloneSeed = 512

// CloneReq is the new identity of a cloned VM.
type CloneReq struct {
	// Hostname is the box's new host name.
	Hostname string `json:"hostname"`
	// Env replaces the agent's environment for later runs (KEY=VALUE).
	Env []string `json:"env"`
	// TimeUnixNano is the host's clock when sent: the guest's clock is
	// stepped to it (it stood still while the snapshot was stored).
	TimeUnixNano int64 `json:"time_unix_nano"`
	// Seed is fresh entropy from the host, mixed into the guest's random
	// number generator, which is then reseeded: a clone must not produce
	// the same random numbers as its parent and siblings.
	Seed []byte `json:"seed"`
}

func (r *CloneReq) validate() *Error {
	switch {
	case r == nil:
		return Errorf(CodeInvalid, "clone needs its parameters")
	case r.Hostname == "" || len(r.Hostname) > 64:
		return Errorf(CodeInvalid, "clone needs a host name of 1-64 bytes")
	case len(r.Seed) < 32 || len(r.Seed) > MaxCloneSeed:
		return Errorf(CodeInvalid, "clone needs a seed of 32-%d bytes", MaxCloneSeed)
	case len(r.Env) > 1024:
		return Errorf(CodeInvalid, "clone: too many environment variables")
	}
	return nil
}
