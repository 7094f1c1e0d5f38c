package events

import (
	"encoding/json"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/cockroachdb/errors"
)

// Level is a cluster feature level (docs/design.md, "Feature levels"). Every event type
// has a minimum level (MinLevel); the cluster's level is recorded in the cluster stream
// (ClusterLevelRaised) and raised only while every live coild runs a release that reads
// the types of the new level. Writers refuse to append an event whose type needs a level
// above the cluster's: a coild of an older release, still watching the log during a
// rolling upgrade, never meets a type it does not know.
//
// Levels only go up. A release supports every level up to its own (CurrentLevel).
type Level uint32

const (
	// LevelBase is the level of a log without ClusterLevelRaised: the event types of the
	// releases before feature levels (type codes 1-11). Their coilds record no level in
	// their liveness key, and count as LevelBase.
	LevelBase Level = 0
	// Level1 adds the types of issues 13 and 14: ClusterLevelRaised itself, block
	// streams, reservations, pool options, pool lifecycle, node selectors and labels.
	Level1 Level = 1
	// CurrentLevel is the highest level this build reads and writes.
	CurrentLevel = Level1
)

// ErrFutureLevel: the cluster's level is above CurrentLevel (the log was written by a
// newer release, which may write types this build does not know): upgrade coil.
var ErrFutureLevel = errors.New("events: cluster level is newer than this build")

// typeLevels is the minimum cluster level of every event type. An entry never changes
// once a release carried it; a new type gets the level of the first release that reads
// it (a level above every released one). testdata/events/levels.txt pins the table.
var typeLevels = map[Type]Level{
	TypePoolCreated: LevelBase, TypePoolSubnetAdded: LevelBase, TypePoolDeleted: LevelBase,
	TypeBlockAssigned: LevelBase, TypeBlockReleased: LevelBase, TypeBlockReclaimed: LevelBase,
	TypeAddressAssigned: LevelBase, TypeAddressReleased: LevelBase,
	TypeNodeRegistered: LevelBase, TypeNodeRetired: LevelBase, TypeSnapshot: LevelBase,

	TypeClusterLevelRaised: Level1,
	TypePoolSplit:          Level1, TypeNodeBlockAdded: Level1, TypeNodeBlockRemoved: Level1,
	TypeAddressesReserved: Level1, TypeAddressesUnreserved: Level1, TypePoolNetworkBroadcastSet: Level1,

	TypeAddressClaimed: Level1, TypeAddressClaimReleased: Level1,

	TypePoolNodeSelectorSet: Level1, TypePoolDisabled: Level1, TypePoolEnabled: Level1, TypeNodeLabelsSet: Level1,
}

// MinLevel is the lowest cluster level at which events of type t may be appended. A type
// missing from the table (a bug: TestEveryTypeHasALevel) needs a level no release has.
func MinLevel(t Type) Level {
	l, ok := typeLevels[t]
	if !ok {
		return CurrentLevel + 1
	}
	return l
}

// NeededLevel is the highest MinLevel of the events' types (LevelBase for none), and the
// type that needs it.
func NeededLevel(evs []*Event) (Level, Type) {
	need, why := LevelBase, Type("")
	for _, e := range evs {
		if l := MinLevel(e.Type()); l > need {
			need, why = l, e.Type()
		}
	}
	return need, why
}

// TypesAt lists the event types whose minimum level is exactly l, sorted.
func TypesAt(l Level) []Type {
	var out []Type
	for t, tl := range typeLevels {
		if tl == l {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// AliveInfo is what a coild records in its liveness key (Keys.Alive): its node, the
// highest feature level its release reads, and a build identification for people.
// Coilds of releases before feature levels store only the node name: ParseAlive then
// returns LevelBase with Legacy set.
type AliveInfo struct {
	Node  string `json:"node"`
	Level Level  `json:"level"`
	Build string `json:"build,omitempty"`
	// Legacy: the value is a bare node name, written by a release before feature levels.
	Legacy bool `json:"-"`
}

// AliveValue is the liveness key's value for info (JSON).
func AliveValue(info AliveInfo) string {
	b, _ := json.Marshal(info) // strings and integers only: cannot fail
	return string(b)
}

// ParseAlive reads a liveness key's value. A value that is not a JSON object is a bare
// node name (a release before feature levels): LevelBase, Legacy. A JSON object that does
// not decode counts as LevelBase too (it can only hold back a raise, never allow one).
func ParseAlive(value []byte) AliveInfo {
	s := strings.TrimSpace(string(value))
	if !strings.HasPrefix(s, "{") {
		return AliveInfo{Node: s, Level: LevelBase, Legacy: true}
	}
	var info AliveInfo
	if err := json.Unmarshal([]byte(s), &info); err != nil {
		return AliveInfo{Level: LevelBase, Build: "unreadable liveness value"}
	}
	return info
}

// Build identifies this build for people (coilctl cluster version): the VCS revision Go
// recorded (12 digits, "+dirty" for a modified tree), else the main module's version.
func Build() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return bi.Main.Version
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}
