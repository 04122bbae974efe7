package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/cli"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/posener/complete"
)

func aclCommands(m *meta) map[string]cli.Command {
	jsonFlag := complete.Flags{"-json": complete.PredictNothing, "-t": complete.PredictAnything}
	tokenFlags := complete.Flags{"-name": complete.PredictAnything, "-type": complete.PredictSet("client", "management"),
		"-policy": complete.PredictAnything, "-global": complete.PredictNothing, "-ttl": complete.PredictAnything}
	return map[string]cli.Command{
		"acl":        &group{synopsis: "ACL commands", help: "Usage: tether acl <subcommand> [options] [args]"},
		"acl policy": &group{synopsis: "ACL policy commands", help: "Usage: tether acl policy <apply|list|info|delete> [options] [args]"},
		"acl token":  &group{synopsis: "ACL token commands", help: "Usage: tether acl token <create|list|info|self|update|delete> [options] [args]"},
		"acl bootstrap": &command{m: m, synopsis: "Create the first management token",
			help:  "Usage: tether acl bootstrap [-json] [-t TEMPLATE]\n\n  Creates the first management token and prints it.",
			flags: jsonFlag, run: runACLBootstrap},
		"acl policy apply": &command{m: m, synopsis: "Write an ACL policy from a rules file",
			help: `
Usage: tether acl policy apply [-description D] <name> <file|->

  Writes the policy of the file (its HCL rules) under name.
`,
			flags: complete.Flags{"-description": complete.PredictAnything}, args: complete.PredictFiles("*"),
			run: runACLPolicyApply},
		"acl policy list": &command{m: m, synopsis: "List the ACL policies", help: "Usage: tether acl policy list [-json] [-t TEMPLATE]",
			flags: jsonFlag, run: runACLPolicyList},
		"acl policy info": &command{m: m, synopsis: "Show an ACL policy and its rules", help: "Usage: tether acl policy info [-json] [-t TEMPLATE] <name>",
			flags: jsonFlag, run: runACLPolicyInfo},
		"acl policy delete": &command{m: m, synopsis: "Remove an ACL policy", help: "Usage: tether acl policy delete <name>",
			run: runACLPolicyDelete},
		"acl token create": &command{m: m, synopsis: "Make an ACL token",
			help: `
Usage: tether acl token create [options]

Options:
  -name <name>       A name for the token.
  -type <type>       client (the default) or management.
  -policy <name>     A policy of a client token; may be repeated.
  -global            Replicate the token to every region.
  -ttl <duration>    Expire the token after this long.
  -json, -t <tmpl>   Print the API's JSON, or through a Go template.
`,
			flags: mergeFlags(tokenFlags, jsonFlag), run: runACLTokenCreate},
		"acl token update": &command{m: m, synopsis: "Change an ACL token's name, type or policies",
			help:  "Usage: tether acl token update [-name N] [-type T] [-policy P ...] [-json] <accessor>",
			flags: mergeFlags(tokenFlags, jsonFlag), run: runACLTokenUpdate},
		"acl token list": &command{m: m, synopsis: "List the ACL tokens", help: "Usage: tether acl token list [-json] [-t TEMPLATE]",
			flags: jsonFlag, run: runACLTokenList},
		"acl token info": &command{m: m, synopsis: "Show an ACL token by accessor ID", help: "Usage: tether acl token info [-json] [-t TEMPLATE] <accessor>",
			flags: jsonFlag, run: runACLTokenInfo},
		"acl token self": &command{m: m, synopsis: "Show the token the request is made with", help: "Usage: tether acl token self [-json] [-t TEMPLATE]",
			flags: jsonFlag, run: runACLTokenSelf},
		"acl token delete": &command{m: m, synopsis: "Remove an ACL token", help: "Usage: tether acl token delete <accessor>",
			run: runACLTokenDelete},
	}
}

func outFlags(jsonOut *bool, tmpl *string) func(*flagSetT) {
	return func(fs *flagSetT) {
		fs.BoolVar(jsonOut, "json", false, "")
		fs.StringVar(tmpl, "t", "", "")
	}
}

func formatToken(t *nomad.ACLToken) string {
	expiry := "<none>"
	if t.ExpirationTime != nil && !t.ExpirationTime.IsZero() {
		expiry = formatTime(*t.ExpirationTime)
	}
	policies := "n/a"
	if t.Type != "management" {
		policies = fmt.Sprintf("%v", t.Policies)
	}
	return formatKV([]string{
		"Accessor ID|" + t.AccessorID,
		"Secret ID|" + t.SecretID,
		"Name|" + orNone(t.Name),
		"Type|" + t.Type,
		fmt.Sprintf("Global|%v", t.Global),
		"Create Time|" + formatTime(t.CreateTime),
		"Expiry Time|" + expiry,
		fmt.Sprintf("Create Index|%d", t.CreateIndex),
		fmt.Sprintf("Modify Index|%d", t.ModifyIndex),
		"Policies|" + policies,
	})
}

func (m *meta) printToken(t *nomad.ACLToken, jsonOut bool, tmpl string) int {
	if done, code := m.formatOut(jsonOut, tmpl, t); done {
		return code
	}
	m.ui.Output(formatToken(t))
	return 0
}

func runACLBootstrap(m *meta, args []string) int {
	var jsonOut bool
	var tmpl string
	c, _, code := m.start("acl bootstrap", args, nArgs(0), outFlags(&jsonOut, &tmpl))
	if c == nil {
		return code
	}
	t, _, err := c.ACLTokens().Bootstrap(nil)
	if err != nil {
		m.apiError("bootstrapping", err)
		return 1
	}
	return m.printToken(t, jsonOut, tmpl)
}

func runACLPolicyApply(m *meta, args []string) int {
	var desc string
	c, rest, code := m.start("acl policy apply", args, nArgs(2), func(fs *flagSetT) { fs.StringVar(&desc, "description", "", "") })
	if c == nil {
		return code
	}
	rules, err := m.readFileArg(rest[1])
	if err != nil {
		m.ui.Error(fmt.Sprintf("Error reading policy file: %v", err))
		return 1
	}
	if _, err := c.ACLPolicies().Upsert(&nomad.ACLPolicy{Name: rest[0], Description: desc, Rules: string(rules)}, nil); err != nil {
		m.apiError("writing ACL policy", err)
		return 1
	}
	m.ui.Output(fmt.Sprintf("Successfully wrote %q ACL policy!", rest[0]))
	return 0
}

func runACLPolicyList(m *meta, args []string) int {
	var jsonOut bool
	var tmpl string
	c, _, code := m.start("acl policy list", args, nArgs(0), outFlags(&jsonOut, &tmpl))
	if c == nil {
		return code
	}
	ps, _, err := c.ACLPolicies().List(nil)
	if err != nil {
		m.apiError("retrieving ACL policies", err)
		return 1
	}
	if done, code := m.formatOut(jsonOut, tmpl, ps); done {
		return code
	}
	if len(ps) == 0 {
		m.ui.Output("No policies found")
		return 0
	}
	rows := []string{"Name|Description"}
	for _, p := range ps {
		rows = append(rows, p.Name+"|"+p.Description)
	}
	m.ui.Output(formatList(rows))
	return 0
}

func runACLPolicyInfo(m *meta, args []string) int {
	var jsonOut bool
	var tmpl string
	c, rest, code := m.start("acl policy info", args, nArgs(1), outFlags(&jsonOut, &tmpl))
	if c == nil {
		return code
	}
	p, _, err := c.ACLPolicies().Info(rest[0], nil)
	if err != nil {
		m.apiError("querying ACL policy", err)
		return 1
	}
	if done, code := m.formatOut(jsonOut, tmpl, p); done {
		return code
	}
	m.ui.Output(formatKV([]string{
		"Name|" + p.Name,
		"Description|" + orNone(p.Description),
		fmt.Sprintf("CreateIndex|%d", p.CreateIndex),
		fmt.Sprintf("ModifyIndex|%d", p.ModifyIndex),
	}))
	m.ui.Output("\nRules\n\n" + strings.TrimSpace(p.Rules))
	return 0
}

func runACLPolicyDelete(m *meta, args []string) int {
	c, rest, code := m.start("acl policy delete", args, nArgs(1), nil)
	if c == nil {
		return code
	}
	if _, err := c.ACLPolicies().Delete(rest[0], nil); err != nil {
		m.apiError("deleting ACL policy", err)
		return 1
	}
	m.ui.Output(fmt.Sprintf("Successfully deleted %q ACL policy!", rest[0]))
	return 0
}

// tokenOpts are the flags shared by token create and update.
type tokenOpts struct {
	name, typ, ttl string
	global         bool
	policies       headerFlag
	jsonOut        bool
	tmpl           string
}

func (o *tokenOpts) register(fs *flagSetT) {
	fs.StringVar(&o.name, "name", "", "")
	fs.StringVar(&o.typ, "type", "", "")
	fs.StringVar(&o.ttl, "ttl", "", "")
	fs.BoolVar(&o.global, "global", false, "")
	fs.Var(&o.policies, "policy", "")
	fs.BoolVar(&o.jsonOut, "json", false, "")
	fs.StringVar(&o.tmpl, "t", "", "")
}

func runACLTokenCreate(m *meta, args []string) int {
	var o tokenOpts
	c, _, code := m.start("acl token create", args, nArgs(0), o.register)
	if c == nil {
		return code
	}
	t := &nomad.ACLToken{Name: o.name, Type: o.typ, Policies: o.policies, Global: o.global}
	if t.Type == "" {
		t.Type = "client"
	}
	if o.ttl != "" {
		d, err := time.ParseDuration(o.ttl)
		if err != nil || d <= 0 {
			m.ui.Error(fmt.Sprintf("Error parsing -ttl %q: want a positive duration such as 1h", o.ttl))
			return cli.RunResultHelp
		}
		t.ExpirationTTL = d
	}
	out, _, err := c.ACLTokens().Create(t, nil)
	if err != nil {
		m.apiError("creating token", err)
		return 1
	}
	return m.printToken(out, o.jsonOut, o.tmpl)
}

func runACLTokenUpdate(m *meta, args []string) int {
	var o tokenOpts
	c, rest, code := m.start("acl token update", args, nArgs(1), o.register)
	if c == nil {
		return code
	}
	t, _, err := c.ACLTokens().Info(rest[0], nil)
	if err != nil {
		m.apiError("fetching token", err)
		return 1
	}
	if o.name != "" {
		t.Name = o.name
	}
	if o.typ != "" {
		t.Type = o.typ
	}
	if len(o.policies) > 0 {
		t.Policies = o.policies
	}
	out, _, err := c.ACLTokens().Update(t, nil)
	if err != nil {
		m.apiError("updating token", err)
		return 1
	}
	return m.printToken(out, o.jsonOut, o.tmpl)
}

func runACLTokenList(m *meta, args []string) int {
	var jsonOut bool
	var tmpl string
	c, _, code := m.start("acl token list", args, nArgs(0), outFlags(&jsonOut, &tmpl))
	if c == nil {
		return code
	}
	ts, _, err := c.ACLTokens().List(nil)
	if err != nil {
		m.apiError("retrieving ACL tokens", err)
		return 1
	}
	if done, code := m.formatOut(jsonOut, tmpl, ts); done {
		return code
	}
	if len(ts) == 0 {
		m.ui.Output("No tokens found")
		return 0
	}
	rows := []string{"Name|Type|Global|Accessor ID|Expired"}
	now := time.Now()
	for _, t := range ts {
		expired := t.ExpirationTime != nil && !t.ExpirationTime.IsZero() && t.ExpirationTime.Before(now)
		rows = append(rows, fmt.Sprintf("%s|%s|%v|%s|%v", orNone(t.Name), t.Type, t.Global, t.AccessorID, expired))
	}
	m.ui.Output(formatList(rows))
	return 0
}

func runACLTokenInfo(m *meta, args []string) int {
	var jsonOut bool
	var tmpl string
	c, rest, code := m.start("acl token info", args, nArgs(1), outFlags(&jsonOut, &tmpl))
	if c == nil {
		return code
	}
	t, _, err := c.ACLTokens().Info(rest[0], nil)
	if err != nil {
		m.apiError("fetching token", err)
		return 1
	}
	return m.printToken(t, jsonOut, tmpl)
}

func runACLTokenSelf(m *meta, args []string) int {
	var jsonOut bool
	var tmpl string
	c, _, code := m.start("acl token self", args, nArgs(0), outFlags(&jsonOut, &tmpl))
	if c == nil {
		return code
	}
	t, _, err := c.ACLTokens().Self(nil)
	if err != nil {
		m.apiError("fetching self token", err)
		return 1
	}
	return m.printToken(t, jsonOut, tmpl)
}

func runACLTokenDelete(m *meta, args []string) int {
	c, rest, code := m.start("acl token delete", args, nArgs(1), nil)
	if c == nil {
		return code
	}
	if _, err := c.ACLTokens().Delete(rest[0], nil); err != nil {
		m.apiError("deleting token", err)
		return 1
	}
	m.ui.Output(fmt.Sprintf("Token %s successfully deleted", rest[0]))
	return 0
}
