package acl

import (
	"tether/structs"
)

// methodRule is what a client method requires: a node policy, or any one
// of a list of capabilities in the allocation's namespace.
type methodRule struct {
	nodeWrite  bool
	nodeRead   bool
	agentWrite bool
	agentRead  bool
	nsAnyOf    []string
}

// clientMethods is the seed's "ACL Required" column, by RPC method. Both
// servers (before forwarding) and nodes (before answering) check it.
var clientMethods = map[string]methodRule{
	structs.MethodClientStats:      {nodeRead: true},
	structs.MethodNodeMetaRead:     {nodeRead: true},
	structs.MethodNodeMetaApply:    {nodeWrite: true},
	structs.MethodClientGCAll:      {nodeWrite: true},
	structs.MethodClientAllocStats: {nsAnyOf: []string{NamespaceCapabilityReadJob}},
	structs.MethodClientAllocGC:    {nsAnyOf: []string{NamespaceCapabilitySubmitJob, NamespaceCapabilityGCAllocation}},
	structs.MethodFsList:           {nsAnyOf: []string{NamespaceCapabilityReadFS}},
	structs.MethodFsStat:           {nsAnyOf: []string{NamespaceCapabilityReadFS}},
	structs.MethodFsReadAt:         {nsAnyOf: []string{NamespaceCapabilityReadFS}},
	structs.MethodFsStream:         {nsAnyOf: []string{NamespaceCapabilityReadFS}},
	structs.MethodFsLogs:           {nsAnyOf: []string{NamespaceCapabilityReadLogs, NamespaceCapabilityReadFS}},
	structs.MethodFsArchive:        {nsAnyOf: []string{NamespaceCapabilityReadFS}},
	// A raw_exec task's exec also needs alloc-node-exec: ExecNeedsNodeExec.
	structs.MethodClientExec:         {nsAnyOf: []string{NamespaceCapabilityAllocExec}},
	structs.MethodClientAllocRestart: {nsAnyOf: []string{NamespaceCapabilityAllocLifecycle}},
	structs.MethodClientAllocSignal:  {nsAnyOf: []string{NamespaceCapabilityAllocLifecycle}},
	structs.MethodAgentMonitor:       {agentRead: true},
	structs.MethodAgentProfile:       {agentWrite: true},
}

// IsAllocMethod reports whether method is checked against an allocation's
// namespace (as opposed to the node policy).
func IsAllocMethod(method string) bool {
	r, ok := clientMethods[method]
	return ok && len(r.nsAnyOf) > 0
}

// AllowClientMethod reports whether the ACL may call the client method;
// namespace is the allocation's own namespace for allocation methods and
// ignored for node methods. A method missing from the table is allowed to
// management only, so a new method fails closed until it is listed.
func (a *ACL) AllowClientMethod(method, namespace string) bool {
	if a.IsManagement() {
		return true
	}
	r, ok := clientMethods[method]
	switch {
	case a == nil || !ok:
		return false
	case r.nodeWrite:
		return a.AllowNodeWrite()
	case r.nodeRead:
		return a.AllowNodeRead()
	case r.agentWrite:
		return a.AllowAgentWrite()
	case r.agentRead:
		return a.AllowAgentRead()
	default:
		return a.AllowNamespaceAny(namespace, r.nsAnyOf...)
	}
}

// ExecNeedsNodeExec reports whether exec into a task of driver needs
// alloc-node-exec beside alloc-exec: the driver isolates nothing from the
// node (raw_exec, and "" which is raw_exec), as Nomad requires.
func ExecNeedsNodeExec(driver string) bool { return driver == "" || driver == "raw_exec" }

// AllowExec reports whether the ACL may exec into a task of driver in
// namespace.
func (a *ACL) AllowExec(namespace, driver string) bool {
	if !a.AllowClientMethod(structs.MethodClientExec, namespace) {
		return false
	}
	return !ExecNeedsNodeExec(driver) || a.IsManagement() || a.AllowNamespaceOperation(namespace, NamespaceCapabilityAllocNodeExec)
}
