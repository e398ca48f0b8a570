package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/switchboard-ipc/switchboard"
)

// policy is the compiled [policy] table. It is immutable once compiled:
// a reload compiles a new one and hands it to Node.SetPolicy, so Allow
// needs no lock.
//
// How it decides:
//   - connect: the uids and gids in [policy.connect]; without that
//     table, root and the uid the node runs as.
//   - call (target: a service id): the [[policy.service]] rule with that id
//     that names the action.
//   - publish, subscribe, list with a group (target: a group): the
//     [[policy.group]] rules; send, own (target: a name or an address): the
//     [[policy.name]] rules. Among the rules whose pattern matches the
//     target and that name the action, an exact pattern wins over a
//     prefix ("sys.*"), and a longer prefix over a shorter one.
//   - list without a group, monitor: [policy.bus]. Without a monitor rule,
//     only root and the node's uid may monitor, whatever the default.
//
// An action no rule covers gets policy.default (allow, unless set to
// deny). A rule admits a process of this node if its uid is in uids, its
// primary gid (as SO_PEERCRED reports it; supplementary groups are not
// seen) is in gids, or all is true; it admits a connection on another node
// of the cluster only if that node is in nodes ("*": any node): another
// host's uids are not this one's, so uids, gids and all never admit one.
type policy struct {
	allowByDefault bool
	connect        *who // nil: root and the node's uid
	nodeUID        uint32
	busList        *who
	busMonitor     *who
	services       map[uint16]*who
	groups         map[switchboard.Action][]patternRule
	names          map[switchboard.Action][]patternRule
}

type who struct {
	all   bool
	uids  map[uint32]bool
	gids  map[uint32]bool
	nodes map[string]bool // "*": every other node
}

func (w *who) admits(c switchboard.Cred) bool {
	if c.Node != "" {
		return w.nodes[c.Node] || w.nodes["*"]
	}
	return w.all || w.uids[c.UID] || w.gids[c.GID]
}

// privileged: root or the node's uid, on this node.
func (p *policy) privileged(c switchboard.Cred) bool {
	return c.Node == "" && (c.UID == 0 || c.UID == p.nodeUID)
}

// patternRule is a rule for an exact target, or for a prefix when
// prefix is set (the pattern ended in "*").
type patternRule struct {
	pattern string
	prefix  bool
	who     *who
}

func (r patternRule) matches(target string) bool {
	if r.prefix {
		return strings.HasPrefix(target, r.pattern)
	}
	return target == r.pattern
}

// find returns the most specific rule matching target, or nil.
func find(rules []patternRule, target string) *who {
	var best *patternRule
	for i := range rules {
		r := &rules[i]
		if !r.matches(target) {
			continue
		}
		if best == nil || (best.prefix && !r.prefix) || (best.prefix == r.prefix && len(r.pattern) > len(best.pattern)) {
			best = r
		}
	}
	if best == nil {
		return nil
	}
	return best.who
}

// compilePolicy checks pc and builds the policy. Errors name the key:
// "config: policy.group[1].group: ...".
func compilePolicy(pc *PolicyConfig) (*policy, error) {
	p := &policy{
		nodeUID:  uint32(os.Geteuid()),
		services: map[uint16]*who{},
		groups:   map[switchboard.Action][]patternRule{},
		names:    map[switchboard.Action][]patternRule{},
	}
	switch pc.Default {
	case "allow", "":
		p.allowByDefault = true
	case "deny":
	default:
		return nil, fmt.Errorf("config: policy.default: must be allow or deny, not %q", pc.Default)
	}
	var err error
	if p.connect, err = compileWho("policy.connect", pc.Connect); err != nil {
		return nil, err
	}
	if pc.Bus != nil {
		if p.busList, err = compileWho("policy.bus.list", pc.Bus.List); err != nil {
			return nil, err
		}
		if p.busMonitor, err = compileWho("policy.bus.monitor", pc.Bus.Monitor); err != nil {
			return nil, err
		}
	}
	for i, r := range pc.Services {
		key := fmt.Sprintf("policy.service[%d]", i)
		if r.ID == nil {
			return nil, fmt.Errorf("config: %s.id: missing", key)
		}
		if *r.ID < 0 || *r.ID > 0xFFFF {
			return nil, fmt.Errorf("config: %s.id: must be a service id in [0, 65535], not %d", key, *r.ID)
		}
		id := uint16(*r.ID)
		if _, dup := p.services[id]; dup {
			return nil, fmt.Errorf("config: %s.id: service %d has a rule already", key, id)
		}
		w, err := compileWho(key+".call", r.Call)
		if err != nil {
			return nil, err
		}
		if w == nil {
			return nil, fmt.Errorf("config: %s.call: missing (a service rule says who may call)", key)
		}
		p.services[id] = w
	}
	for i, r := range pc.Groups {
		key := fmt.Sprintf("policy.group[%d]", i)
		if err := addPatternRules(p.groups, key, "group", r.Group, map[switchboard.Action]*Who{
			switchboard.ActionPublish: r.Publish, switchboard.ActionSubscribe: r.Subscribe, switchboard.ActionList: r.List,
		}); err != nil {
			return nil, err
		}
	}
	for i, r := range pc.Names {
		key := fmt.Sprintf("policy.name[%d]", i)
		if err := addPatternRules(p.names, key, "name", r.Name, map[switchboard.Action]*Who{
			switchboard.ActionOwn: r.Own, switchboard.ActionSend: r.Send,
		}); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func addPatternRules(into map[switchboard.Action][]patternRule, key, field, pattern string, actions map[switchboard.Action]*Who) error {
	pat, prefix := strings.CutSuffix(pattern, "*")
	switch {
	case pattern == "":
		return fmt.Errorf("config: %s.%s: missing", key, field)
	case strings.Contains(pat, "*"):
		return fmt.Errorf("config: %s.%s: %q: '*' may only end a pattern", key, field, pattern)
	}
	named := false
	for a, w := range actions {
		cw, err := compileWho(key+"."+a.String(), w)
		if err != nil {
			return err
		}
		if cw == nil {
			continue
		}
		named = true
		into[a] = append(into[a], patternRule{pattern: pat, prefix: prefix, who: cw})
	}
	if !named {
		return fmt.Errorf("config: %s: names no action", key)
	}
	return nil
}

func compileWho(key string, w *Who) (*who, error) {
	if w == nil {
		return nil, nil
	}
	out := &who{all: w.All, uids: map[uint32]bool{}, gids: map[uint32]bool{}, nodes: map[string]bool{}}
	for _, n := range w.Nodes {
		if n == "" || len(n) > 64 || strings.ContainsAny(n, ". :\t\n") {
			return nil, fmt.Errorf("config: %s.nodes: %q is not a node name", key, n)
		}
		out.nodes[n] = true
	}
	for _, u := range w.UIDs {
		if u < 0 || u > 0xFFFFFFFE {
			return nil, fmt.Errorf("config: %s.uids: %d is not a uid", key, u)
		}
		out.uids[uint32(u)] = true
	}
	for _, g := range w.GIDs {
		if g < 0 || g > 0xFFFFFFFE {
			return nil, fmt.Errorf("config: %s.gids: %d is not a gid", key, g)
		}
		out.gids[uint32(g)] = true
	}
	return out, nil
}

// Allow implements switchboard.Policy.
func (p *policy) Allow(c switchboard.Cred, a switchboard.Action, target string) error {
	var w *who
	switch a {
	case switchboard.ActionConnect:
		if p.connect == nil {
			if p.privileged(c) {
				return nil
			}
			return refusal(c, a, target)
		}
		if p.connect.admits(c) {
			return nil
		}
		return refusal(c, a, target)
	case switchboard.ActionCall:
		if id, err := strconv.ParseUint(target, 10, 16); err == nil {
			w = p.services[uint16(id)]
		}
	case switchboard.ActionPublish, switchboard.ActionSubscribe:
		w = find(p.groups[a], target)
	case switchboard.ActionList:
		if target == "" {
			w = p.busList
		} else {
			w = find(p.groups[a], target)
		}
	case switchboard.ActionOwn, switchboard.ActionSend:
		w = find(p.names[a], target)
	case switchboard.ActionMonitor:
		if p.busMonitor == nil { // privileged whatever the default: a copy of everyone's traffic
			if p.privileged(c) {
				return nil
			}
			return refusal(c, a, target)
		}
		w = p.busMonitor
	}
	if w == nil {
		if p.allowByDefault {
			return nil
		}
		return refusal(c, a, target)
	}
	if w.admits(c) {
		return nil
	}
	return refusal(c, a, target)
}

// refusal is the error the client reads.
func refusal(c switchboard.Cred, a switchboard.Action, target string) error {
	var what string
	switch a {
	case switchboard.ActionConnect:
		return fmt.Errorf("policy: uid %d (gid %d) may not connect", c.UID, c.GID)
	case switchboard.ActionCall:
		what = "call service " + target
	case switchboard.ActionPublish, switchboard.ActionSend:
		what = fmt.Sprintf("%s to %q", a, target)
	case switchboard.ActionSubscribe:
		what = fmt.Sprintf("subscribe to %q", target)
	case switchboard.ActionOwn:
		what = fmt.Sprintf("own %q", target)
	case switchboard.ActionList:
		what = "list"
		if target != "" {
			what = fmt.Sprintf("list the members of %q", target)
		}
	case switchboard.ActionMonitor:
		what = "monitor the bus"
	default:
		what = fmt.Sprintf("%s %q", a, target)
	}
	return fmt.Errorf("policy: uid %d may not %s", c.UID, what)
}
