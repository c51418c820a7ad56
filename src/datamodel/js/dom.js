// A small read-mostly XML DOM for the ECMAScript data model (the parts of
// DOM Level 2 Core that SCXML documents use). Evaluated once per context;
// the value of this script is the function that turns the tree the Rust
// side parsed ({t:'e', n, ns, a:[[name, value]], c:[...]} / {t:'x', v})
// into DOM nodes.
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
      for (var i = 0; i < this.childNodes.length; i++) s += this.childNodes[i].textContent;
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
    (function walk(n) {
      for (var i = 0; i < n.childNodes.length; i++) {
        var c = n.childNodes[i];
        if (c.nodeType === 1) {
          if (name === '*' || c.tagName === name || c.localName === name) found.push(c);
          walk(c);
        }
      }
    })(this);
    return nodeList(found);
  };
  Node.prototype.toXML = function () {
    if (this.nodeType === 3) return escapeText(this.data);
    var inner = '';
    for (var i = 0; i < this.childNodes.length; i++) inner += this.childNodes[i].toXML();
    if (this.nodeType === 9) return inner;
    var attrs = '';
    for (var j = 0; j < this.attributes.length; j++) {
      attrs += ' ' + this.attributes[j].name + '="' + escapeAttr(this.attributes[j].value) + '"';
    }
    return inner === '' ? '<' + this.tagName + attrs + '/>'
      : '<' + this.tagName + attrs + '>' + inner + '</' + this.tagName + '>';
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

  function build(tree) {
    if (tree.t === 'x') return new Text(tree.v);
    var el = new Element(tree.n, tree.ns, tree.a);
    for (var i = 0; i < tree.c.length; i++) el.appendChild(build(tree.c[i]));
    return el;
  }
  return function (nodes) {
    var doc = new Document();
    for (var i = 0; i < nodes.length; i++) doc.appendChild(build(nodes[i]));
    return doc;
  };
})()
