// A small read-mostly XML DOM for the ECMAScript data model (the parts of
// DOM Level 2 Core that SCXML documents use). Evaluated once per context;
// the value of this script is the function that turns the nodes the Rust
// side parsed, flat in document order ({t:'e', n, ns, a:[[name, value]], p}
// / {t:'x', v, p}, p the index of the parent element, -1 the document),
// into DOM nodes. No function here recurses on the tree's depth.
(function () {
  function nodeList(items) {
    Object.defineProperty(items, 'item', {
      value: function (i) { return i >= 0 && i < this.length ? this[i] : null; },
      enumerable: false
    });
    return items;
  }
  function escapeText(s) {
    return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }
  function escapeAttr(s) {
    return escapeText(s).replace(/"/g, '&quot;');
  }

  function Node(type, name) {
    Object.defineProperty(this, 'parentNode', { value: null, writable: true, enumerable: false });
    this.nodeType = type;
    this.nodeName = name;
    this.childNodes = nodeList([]);
  }
  Object.defineProperty(Node.prototype, '__orsDom', { value: true, enumerable: false });
  Object.defineProperty(Node.prototype, 'firstChild', {
    get: function () { return this.childNodes.length ? this.childNodes[0] : null; }
  });
  Object.defineProperty(Node.prototype, 'lastChild', {
    get: function () { return this.childNodes.length ? this.childNodes[this.childNodes.length - 1] : null; }
  });
  function sibling(node, step) {
    var p = node.parentNode;
    if (!p) return null;
    var i = Array.prototype.indexOf.call(p.childNodes, node) + step;
    return i >= 0 && i < p.childNodes.length ? p.childNodes[i] : null;
  }
  Object.defineProperty(Node.prototype, 'nextSibling', { get: function () { return sibling(this, 1); } });
  Object.defineProperty(Node.prototype, 'previousSibling', { get: function () { return sibling(this, -1); } });
  Object.defineProperty(Node.prototype, 'textContent', {
    get: function () {
      if (this.nodeType === 3) return this.data;
      var s = '';
      var stack = [this];
      while (stack.length) {
        var n = stack.pop();
        if (n.nodeType === 3) { s += n.data; continue; }
        for (var i = n.childNodes.length - 1; i >= 0; i--) stack.push(n.childNodes[i]);
      }
      return s;
    }
  });
  Node.prototype.hasChildNodes = function () { return this.childNodes.length > 0; };
  Node.prototype.appendChild = function (child) {
    child.parentNode = this;
    this.childNodes.push(child);
    return child;
  };
  Node.prototype.getElementsByTagName = function (name) {
    var found = [];
    var stack = [];
    for (var i = this.childNodes.length - 1; i >= 0; i--) stack.push(this.childNodes[i]);
    while (stack.length) {
      var c = stack.pop();
      if (c.nodeType !== 1) continue;
      if (name === '*' || c.tagName === name || c.localName === name) found.push(c);
      for (var j = c.childNodes.length - 1; j >= 0; j--) stack.push(c.childNodes[j]);
    }
    return nodeList(found);
  };
  Node.prototype.toXML = function () {
    var out = '';
    // Entries: a node to write, or the end of an element (its start tag
    // began at `at`; with nothing written inside, it becomes `<a/>`).
    var stack = [{ node: this }];
    while (stack.length) {
      var e = stack.pop();
      var n = e.node;
      if (e.end) {
        out = out.length === e.inner ? out.slice(0, e.at) + e.open + '/>'
          : out + '</' + n.tagName + '>';
        continue;
      }
      if (n.nodeType === 3) { out += escapeText(n.data); continue; }
      if (n.nodeType !== 9) {
        var open = '<' + n.tagName;
        for (var j = 0; j < n.attributes.length; j++) {
          open += ' ' + n.attributes[j].name + '="' + escapeAttr(n.attributes[j].value) + '"';
        }
        var at = out.length;
        out += open + '>';
        stack.push({ node: n, end: true, at: at, open: open, inner: out.length });
      }
      for (var i = n.childNodes.length - 1; i >= 0; i--) stack.push({ node: n.childNodes[i] });
    }
    return out;
  };
  Node.prototype.toString = function () { return this.toXML(); };
  Node.prototype.toJSON = function () { return { $xml: this.toXML() }; };

  function Text(value) {
    Node.call(this, 3, '#text');
    this.data = value;
    this.nodeValue = value;
  }
  Text.prototype = Object.create(Node.prototype);

  function Element(name, ns, attrs) {
    Node.call(this, 1, name);
    this.tagName = name;
    this.localName = name.indexOf(':') >= 0 ? name.slice(name.indexOf(':') + 1) : name;
    this.namespaceURI = ns;
    this.nodeValue = null;
    var list = [];
    for (var i = 0; i < attrs.length; i++) list.push({ name: attrs[i][0], value: attrs[i][1] });
    this.attributes = nodeList(list);
  }
  Element.prototype = Object.create(Node.prototype);
  Element.prototype.getAttribute = function (name) {
    for (var i = 0; i < this.attributes.length; i++) {
      if (this.attributes[i].name === name) return this.attributes[i].value;
    }
    return null;
  };
  Element.prototype.hasAttribute = function (name) { return this.getAttribute(name) !== null; };
  Element.prototype.setAttribute = function (name, value) {
    for (var i = 0; i < this.attributes.length; i++) {
      if (this.attributes[i].name === name) { this.attributes[i].value = String(value); return; }
    }
    this.attributes.push({ name: name, value: String(value) });
  };
  Element.prototype.removeAttribute = function (name) {
    for (var i = 0; i < this.attributes.length; i++) {
      if (this.attributes[i].name === name) { this.attributes.splice(i, 1); return; }
    }
  };

  function Document() {
    Node.call(this, 9, '#document');
    this.nodeValue = null;
  }
  Document.prototype = Object.create(Node.prototype);
  Object.defineProperty(Document.prototype, 'documentElement', {
    get: function () {
      for (var i = 0; i < this.childNodes.length; i++) {
        if (this.childNodes[i].nodeType === 1) return this.childNodes[i];
      }
      return null;
    }
  });

  return function (nodes) {
    var doc = new Document();
    var made = [];
    for (var i = 0; i < nodes.length; i++) {
      var n = nodes[i];
      var node = n.t === 'x' ? new Text(n.v) : new Element(n.n, n.ns, n.a);
      made.push(node);
      (n.p < 0 ? doc : made[n.p]).appendChild(node);
    }
    return doc;
  };
})()
