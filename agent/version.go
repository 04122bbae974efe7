package agent

// Version is the Tether release version, printed by "tether version" and
// logged at start-up.
const Version = "0.1.0"

// NomadVersion is the Nomad release whose HTTP API Tether speaks. It is the
// version reported to API callers as nomad.version (for example in
// /v1/agent/self), so that tools which gate features on the Nomad version
// treat Tether like that release.
const NomadVersion = "1.6.5"
